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
from typing import Any

import pytest
import yaml

from nursery.cluster import ClusterConfig, _patroni
from nursery.cluster import _redis_cluster as redis_cluster
from nursery.cluster._prometheus import find_rules, prometheus_config
from nursery.config import Settings
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


def proxy_handler(server: dict[str, Any]) -> dict[str, Any]:
    """The reverse_proxy handler of Caddy's adapted server (the route without a matcher)."""
    handlers = [h for route in server["routes"] for h in route["handle"] if h["handler"] == "reverse_proxy"]
    assert len(handlers) == 1, server["routes"]
    return handlers[0]


def test_caddyfile_is_valid_as_the_cluster_and_compose_use_it() -> None:
    assert caddy("validate").returncode == 0  # defaults: :8080 → 127.0.0.1:4001-4003
    result = caddy("adapt", NURSERY_SITE=":18080", NURSERY_PROXY_BIND="127.0.0.1",
                   NURSERY_UPSTREAMS="127.0.0.1:14001 127.0.0.1:14002", NURSERY_CADDY_ADMIN="off",
                   NURSERY_PROXY_HEALTH_INTERVAL="500ms")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["admin"] == {"disabled": True}
    server = config["apps"]["http"]["servers"]["srv0"]
    assert server["listen"] == ["127.0.0.1:18080"]
    assert "tls" not in config["apps"]  # a site without a name: plain HTTP, no certificate
    proxy = proxy_handler(server)
    assert proxy["handler"] == "reverse_proxy"
    assert [u["dial"] for u in proxy["upstreams"]] == ["127.0.0.1:14001", "127.0.0.1:14002"]
    assert proxy["load_balancing"]["selection_policy"] == {"policy": "round_robin"}
    assert proxy["load_balancing"]["try_duration"] > 0
    active = proxy["health_checks"]["active"]
    assert active["uri"] == "/readyz" and active["interval"] == 500_000_000
    assert proxy["health_checks"]["passive"]["max_fails"] >= 1
    keep_alive = proxy["transport"]["keep_alive"]  # shorter than the instances' idle timeout
    assert keep_alive.get("enabled", True) and keep_alive["idle_timeout"] == 30_000_000_000
    assert Settings().http_idle_timeout > 30


def hsts(server: dict[str, Any]) -> list[str]:
    """The Strict-Transport-Security values the server's routes set (subroutes included)."""
    found: list[str] = []
    for route in server["routes"]:
        for handler in route["handle"]:
            if handler["handler"] == "subroute":
                found += hsts(handler)
            if handler["handler"] == "headers":
                found += handler["response"]["set"].get("Strict-Transport-Security", [])
    return found


def test_with_a_domain_caddy_serves_https_by_acme_redirects_and_sends_hsts() -> None:
    """compose with NURSERY_DOMAIN: the site is the name, on 443, Caddy's automatic HTTPS left
    on (ACME certificates, and the HTTP → HTTPS redirect on port 80 that comes with it)."""
    result = caddy("adapt", NURSERY_SITE="todo.example.com", NURSERY_CADDY_ADMIN="off")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    [server] = config["apps"]["http"]["servers"].values()
    assert server["listen"] == ["0.0.0.0:443"]
    assert server["routes"][0]["match"] == [{"host": ["todo.example.com"]}]
    assert "automatic_https" not in server and "http_port" not in config["apps"]["http"]
    assert "tls" not in config["apps"]  # no issuer given: Caddy's default, ACME
    assert hsts(server) == ["max-age=31536000"]
    assert proxy_handler_in(server)["upstreams"]


def test_the_local_https_uses_caddys_own_ca_and_no_port_80() -> None:
    """``nursery cluster up --tls``: the internal issuer only (nothing leaves the machine), the
    root not installed into this machine's trust store, no redirect listener."""
    from nursery.cluster._tls import caddy_env, own_ipv4_addresses
    result = caddy("adapt", NURSERY_CADDY_ADMIN="off", NURSERY_PROXY_BIND="127.0.0.1",
                   **caddy_env("127.0.0.1", 18443))
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    [server] = config["apps"]["http"]["servers"].values()
    assert server["listen"] == ["127.0.0.1:18443"]
    assert server["automatic_https"] == {"disable_redirects": True}
    assert config["apps"]["tls"]["automation"]["policies"] == [{"issuers": [{"module": "internal"}]}]
    assert config["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"] is False
    assert hsts(server) == ["max-age=31536000"]

    # --proxy-host 0.0.0.0: a certificate for each of this machine's addresses (a phone uses one).
    result = caddy("adapt", NURSERY_CADDY_ADMIN="off", NURSERY_PROXY_BIND="0.0.0.0",
                   **caddy_env("0.0.0.0", 18443))
    assert result.returncode == 0, result.stderr
    [server] = json.loads(result.stdout)["apps"]["http"]["servers"].values()
    assert server["listen"] == ["0.0.0.0:18443"]
    names = set(server["routes"][0]["match"][0]["host"])
    assert "127.0.0.1" in names and set(own_ipv4_addresses()) <= names


def proxy_handler_in(server: dict[str, Any]) -> dict[str, Any]:
    """The reverse_proxy handler of a named site (inside its subroute)."""
    for route in server["routes"]:
        for handler in route["handle"]:
            if handler["handler"] == "subroute":
                return proxy_handler(handler)
    raise AssertionError(server)


def test_compose_passes_the_domain_to_caddy() -> None:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    for domain, site in (("todo.example.com", "todo.example.com"), ("", ":8080")):
        resolved = subprocess.run(
            ["docker-compose", "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=60,
            env=cluster_env(NURSERY_SECRET_KEY="test-secret-of-32-characters-at-least", NURSERY_DOMAIN=domain), check=True).stdout
        caddy_service = yaml.safe_load(resolved)["services"]["caddy"]
        assert caddy_service["environment"]["NURSERY_SITE"] == site
        assert "caddy-data:/data:rw" in caddy_service["volumes"]  # the certificates survive


def test_newer_caddy_options_come_through_the_environment() -> None:
    result = caddy("adapt", NURSERY_PROXY_OPTIONS="stream_close_delay 5m")
    if caddy_version(require_caddy()) >= (2, 7, 0):
        assert result.returncode == 0, result.stderr
        proxy = proxy_handler(json.loads(result.stdout)["apps"]["http"]["servers"]["srv0"])
        assert proxy["stream_close_delay"] == 300_000_000_000
    else:  # Debian 12's caddy 2.6 does not know it: the compose file's image (2.10) does.
        assert result.returncode != 0 and "stream_close_delay" in result.stderr


def test_compose_file_is_valid() -> None:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    env = cluster_env(NURSERY_SECRET_KEY="test-secret-of-32-characters-at-least")
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


def test_compose_publishes_only_the_proxy_to_the_world() -> None:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    resolved = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config"], capture_output=True,
                              text=True, env=cluster_env(NURSERY_SECRET_KEY="test-secret-of-32-characters-at-least"), timeout=60,
                              check=True).stdout
    services = yaml.safe_load(resolved)["services"]
    published = {name: service.get("ports", []) for name, service in services.items()}
    # docker-compose 1.29 resolves "8080:8080" to {published, target} (every interface) and
    # keeps a port bound to a host address as "HOST_IP:PUBLISHED:TARGET/proto".
    assert published.pop("caddy") == [{"published": p, "target": p} for p in (8080, 80, 443)]  # the door
    assert published.pop("prometheus") == ["127.0.0.1:9090:9090/tcp"]  # the host's loopback only
    assert all(not ports for ports in published.values()), published  # the rest: nowhere


def test_compose_is_consistent_with_the_local_cluster() -> None:
    text = COMPOSE.read_text()
    assert "./conf/Caddyfile:/etc/caddy/Caddyfile" in text  # the very same Caddyfile
    assert "NURSERY_UPSTREAMS: nursery-1:4000 nursery-2:4000 nursery-3:4000" in text
    for name in ("NURSERY_DATABASE_URL", "NURSERY_REDIS_URL", "NURSERY_MONGO_URL", "NURSERY_SECRET_KEY",
                 "NURSERY_SITE", "NURSERY_PROXY_HEALTH_INTERVAL"):
        assert name in text
    drain = float(re.search(r'NURSERY_DRAIN_DELAY: "([\d.]+)"', text).group(1))  # type: ignore[union-attr]
    interval = float(re.search(r"NURSERY_PROXY_HEALTH_INTERVAL: ([\d.]+)s", text).group(1))  # type: ignore[union-attr]
    timeout = float(re.search(r'NURSERY_SHUTDOWN_TIMEOUT: "([\d.]+)"', text).group(1))  # type: ignore[union-attr]
    grace = float(re.search(r"stop_grace_period: ([\d.]+)s", text).group(1))  # type: ignore[union-attr]
    assert drain > interval and grace > timeout
    local = ClusterConfig()
    assert local.effective_drain_delay > local.health_interval
    assert "{$NURSERY_UPSTREAMS" in CADDYFILE.read_text()


def test_the_redis_cluster_override_is_valid_and_runs_the_local_clusters_nodes() -> None:
    """compose.redis-cluster.yaml on top of compose.yaml: three cluster nodes with the options
    of ``nursery cluster up --redis-cluster``, joined once before the instances start, which
    are told their seed is a cluster node; nothing more is published."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    files = ["-f", str(COMPOSE), "-f", str(ROOT / "compose.redis-cluster.yaml")]
    env = cluster_env(NURSERY_SECRET_KEY="test-secret-of-32-characters-at-least")
    result = subprocess.run(["docker-compose", *files, "config"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {"caddy", "nursery-1", "nursery-2", "nursery-3", "postgres", "redis",
                             "redis-2", "redis-3", "redis-cluster-init", "mongo", "prometheus"}
    options = redis_cluster.node_args(bus_port=0, directory=Path("/data"))
    wanted = {name: value for name, value in zip(options[::2], options[1::2], strict=True)
              if name != "--cluster-port"}  # the default bus port (6379 + 10000) is fine there
    for node in ("redis", "redis-2", "redis-3"):
        command = services[node]["command"]
        assert command[0] == "redis-server"
        assert {name: value for name, value in zip(command[1::2], command[2::2], strict=True)
                if name in wanted} == wanted, node
        assert services[node].get("ports") is None
    init = services["redis-cluster-init"]
    assert {name: dep["condition"] for name, dep in init["depends_on"].items()} == dict.fromkeys(
        ("redis", "redis-2", "redis-3"), "service_healthy")
    script = " ".join(init["command"])
    assert "redis-cli --cluster create" in script and "--cluster-replicas 0 --cluster-yes" in script
    assert all(f"getent hosts {node} " in script for node in ("redis", "redis-2", "redis-3"))
    for n in (1, 2, 3):
        service = services[f"nursery-{n}"]
        assert service["environment"]["NURSERY_REDIS_URL"] == "redis://redis:6379/0"
        assert Settings.from_env(service["environment"]).redis_cluster is True
        assert service["depends_on"]["redis-cluster-init"] == {"condition": "service_completed_successfully"}


def test_the_ha_override_runs_patroni_nodes_and_redis_replicas_as_cluster_up_ha_does() -> None:
    """compose.ha.yaml on top of compose.yaml and compose.redis-cluster.yaml: three Patroni
    nodes (``postgres`` the first) with the choices of ``nursery cluster up --ha`` (a strict
    synchronous standby, etcd's v2 API, its timings), the instances naming every node with
    target_session_attrs=read-write, six Redis nodes joined with a replica per master;
    nothing more published; the passwords are required."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    files = ["-f", str(COMPOSE), "-f", str(ROOT / "compose.redis-cluster.yaml"),
             "-f", str(ROOT / "compose.ha.yaml")]
    env = cluster_env(NURSERY_SECRET_KEY="test-secret-of-32-characters-at-least", POSTGRES_PASSWORD="pw",
                      REPLICATION_PASSWORD="rpw")
    result = subprocess.run(["docker-compose", *files, "config"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {"caddy", "nursery-1", "nursery-2", "nursery-3", "postgres", "pg-2",
                             "pg-3", "etcd", "redis", "redis-2", "redis-3", "redis-4", "redis-5",
                             "redis-6", "redis-cluster-init", "mongo", "prometheus"}
    assert "--enable-v2=true" in services["etcd"]["command"]
    for n, node in enumerate(("postgres", "pg-2", "pg-3"), start=1):
        assert services[node]["environment"]["PATRONI_NAME"] == f"pg-{n}"
        assert services[node]["depends_on"]["etcd"] == {"condition": "service_healthy"}
    patroni = yaml.safe_load((ROOT / "conf/patroni/patroni.yml").read_text())
    dcs = patroni["bootstrap"]["dcs"]
    assert "etcd" in patroni and "etcd3" not in patroni  # patroni/patroni#2689 (docs/operations.md)
    assert dcs["synchronous_mode"] is True and dcs["synchronous_mode_strict"] is True
    assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"]) == (
        _patroni.TTL, _patroni.LOOP_WAIT, _patroni.RETRY_TIMEOUT)
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]
    for n in (1, 2, 3):
        settings = Settings.from_env(services[f"nursery-{n}"]["environment"])
        assert settings.database_url is not None
        hosts = settings.database_url.split("@", 1)[1].split("/", 1)[0].split(",")
        assert hosts == ["postgres:5432", "pg-2:5432", "pg-3:5432"]
        assert settings.database_url.endswith("?target_session_attrs=read-write")
        assert settings.db_timeout >= 10 and settings.redis_cluster is True
        assert settings.redis_url == ",".join(  # every node a seed
            f"redis://{node}:6379/0" for node in ("redis", "redis-2", "redis-3", "redis-4", "redis-5", "redis-6"))
    script = " ".join(services["redis-cluster-init"]["command"])
    assert "--cluster-replicas 1 --cluster-yes" in script
    assert all(f"getent hosts {node} " in script for node in
               ("redis", "redis-2", "redis-3", "redis-4", "redis-5", "redis-6"))
    published = {name: s.get("ports") for name, s in services.items() if s.get("ports")}
    assert set(published) == {"caddy", "prometheus"}
    missing = subprocess.run(["docker-compose", *files, "config", "-q"], capture_output=True,
                             text=True, env=cluster_env(NURSERY_SECRET_KEY="test-secret-of-32-characters-at-least"), timeout=60)
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed: apt-get install prometheus (scripts/test installs it)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def test_the_compose_prometheus_config_and_its_rules_are_valid() -> None:
    result = promtool("check", "config", str(ROOT / "conf" / "prometheus-compose.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout  # prometheus-rules.yml, checked with it
    compose = COMPOSE.read_text()
    assert "./conf/prometheus-compose.yml:/etc/prometheus/prometheus.yml" in compose
    assert "./conf/prometheus-rules.yml:/etc/prometheus/prometheus-rules.yml" in compose
    assert all(f'"nursery-{n}:4000"' in (ROOT / "conf" / "prometheus-compose.yml").read_text()
               for n in (1, 2, 3))


def test_the_cluster_prometheus_config_follows_its_ports(tmp_path: Path) -> None:
    config = ClusterConfig(instances=2, base_port=5101, host="127.0.0.1")
    targets = [f"127.0.0.1:{port}" for port in config.instance_ports]
    path = tmp_path / "prometheus.yml"
    path.write_text(prometheus_config(targets, find_rules()))
    result = promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    scrape = yaml.safe_load(path.read_text())["scrape_configs"][0]
    assert scrape["static_configs"][0]["targets"] == ["127.0.0.1:5101", "127.0.0.1:5102"]


def test_recording_rules_compute_what_they_say() -> None:
    assert promtool("check", "rules", str(ROOT / "conf" / "prometheus-rules.yml")).returncode == 0
    result = promtool("test", "rules", str(Path(__file__).parent / "prometheus-rules.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_plots_recorded_series(tmp_path: Path) -> None:
    dashboard = json.loads((ROOT / "conf" / "grafana-dashboard.json").read_text())
    rules = yaml.safe_load((ROOT / "conf" / "prometheus-rules.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs and set(exprs) <= recorded, set(exprs) - recorded
    assert recorded <= set(exprs), f"recorded but not plotted: {recorded - set(exprs)}"
