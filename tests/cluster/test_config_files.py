"""The deployment files, checked by the tools that read them: ``caddy`` for conf/Caddyfile,
``docker-compose`` (1.29, no Docker engine needed) for compose.yaml, ``promtool`` for the
Prometheus configs; and their consistency with ``nursery cluster`` (same Caddyfile, same
variable names, drain delay longer than the health check interval)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from nursery.cluster import ClusterConfig
from tests.cluster.support import cluster_env, require_caddy

ROOT = Path(__file__).resolve().parents[2]
CADDYFILE = ROOT / "conf" / "Caddyfile"
COMPOSE = ROOT / "compose.yaml"


def caddy_version(caddy: str) -> tuple[int, ...]:
    out = subprocess.run([caddy, "version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", out)
    assert match, out
    return tuple(int(part) for part in match.groups())


def caddy(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_caddy(), *args, "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                          capture_output=True, text=True, env=cluster_env(**env), timeout=60)


def test_caddyfile_is_valid_as_the_cluster_and_compose_use_it() -> None:
    assert caddy("validate").returncode == 0  # defaults: :8080 → 127.0.0.1:4001-4003
    result = caddy("adapt", NURSERY_PROXY_PORT="18080", NURSERY_PROXY_BIND="127.0.0.1",
                   NURSERY_UPSTREAMS="127.0.0.1:14001 127.0.0.1:14002", NURSERY_CADDY_ADMIN="off",
                   NURSERY_PROXY_HEALTH_INTERVAL="500ms")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["admin"] == {"disabled": True}
    server = config["apps"]["http"]["servers"]["srv0"]
    assert server["listen"] == ["127.0.0.1:18080"]
    proxy = server["routes"][0]["handle"][0]
    assert proxy["handler"] == "reverse_proxy"
    assert [u["dial"] for u in proxy["upstreams"]] == ["127.0.0.1:14001", "127.0.0.1:14002"]
    assert proxy["load_balancing"]["selection_policy"] == {"policy": "round_robin"}
    assert proxy["load_balancing"]["try_duration"] > 0
    active = proxy["health_checks"]["active"]
    assert active["uri"] == "/readyz" and active["interval"] == 500_000_000
    assert proxy["health_checks"]["passive"]["max_fails"] >= 1
    assert proxy["transport"]["keep_alive"]["enabled"] is False


def test_newer_caddy_options_come_through_the_environment() -> None:
    result = caddy("adapt", NURSERY_PROXY_OPTIONS="stream_close_delay 5m")
    if caddy_version(require_caddy()) >= (2, 7, 0):
        assert result.returncode == 0, result.stderr
        proxy = json.loads(result.stdout)["apps"]["http"]["servers"]["srv0"]["routes"][0]["handle"][0]
        assert proxy["stream_close_delay"] == 300_000_000_000
    else:  # Debian 12's caddy 2.6 does not know it: the compose file's image (2.10) does.
        assert result.returncode != 0 and "stream_close_delay" in result.stderr


def test_compose_file_is_valid() -> None:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    env = cluster_env(NURSERY_SECRET_KEY="test-secret")
    # Loads, interpolates and validates the whole file (a bad key fails, naming it).
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    services = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "--services"],
                              capture_output=True, text=True, env=env, timeout=60, check=True).stdout
    assert set(services.split()) == {"caddy", "nursery-1", "nursery-2", "nursery-3", "postgres", "redis",
                             "mongo", "prometheus"}
    # Without the shared secret it refuses, naming the variable.
    missing = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"],
                             capture_output=True, text=True, env=cluster_env(), timeout=60)
    assert missing.returncode != 0 and "NURSERY_SECRET_KEY" in missing.stderr


def test_compose_is_consistent_with_the_local_cluster() -> None:
    text = COMPOSE.read_text()
    assert "./conf/Caddyfile:/etc/caddy/Caddyfile" in text  # the very same Caddyfile
    assert "NURSERY_UPSTREAMS: nursery-1:4000 nursery-2:4000 nursery-3:4000" in text
    for name in ("NURSERY_DATABASE_URL", "NURSERY_REDIS_URL", "NURSERY_MONGO_URL", "NURSERY_SECRET_KEY",
                 "NURSERY_PROXY_PORT", "NURSERY_PROXY_HEALTH_INTERVAL"):
        assert name in text
    drain = float(re.search(r'NURSERY_DRAIN_DELAY: "([\d.]+)"', text).group(1))  # type: ignore[union-attr]
    interval = float(re.search(r"NURSERY_PROXY_HEALTH_INTERVAL: ([\d.]+)s", text).group(1))  # type: ignore[union-attr]
    timeout = float(re.search(r'NURSERY_SHUTDOWN_TIMEOUT: "([\d.]+)"', text).group(1))  # type: ignore[union-attr]
    grace = float(re.search(r"stop_grace_period: ([\d.]+)s", text).group(1))  # type: ignore[union-attr]
    assert drain > interval and grace > timeout
    local = ClusterConfig()
    assert local.effective_drain_delay > local.health_interval
    assert "{$NURSERY_UPSTREAMS" in CADDYFILE.read_text()


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-compose.yml"])
def test_prometheus_configs_are_valid(name: str) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    result = subprocess.run(["promtool", "check", "config", str(ROOT / "conf" / name)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_every_instance() -> None:
    local = (ROOT / "conf" / "prometheus.yml").read_text()
    ports = ClusterConfig().instance_ports
    assert all(f'"127.0.0.1:{port}"' in local for port in ports)
    compose = (ROOT / "conf" / "prometheus-compose.yml").read_text()
    assert all(f'"nursery-{n}:4000"' in compose for n in (1, 2, 3))
    assert "./conf/prometheus-compose.yml:/etc/prometheus/prometheus.yml" in COMPOSE.read_text()
