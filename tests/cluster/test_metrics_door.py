"""Metrics behind a door: the proxy, the public door, does not serve any instance's
``/metrics`` (however the path is spelled), while each instance serves it directly; and a real
Prometheus, given the config ``nursery cluster up`` wrote for this cluster's ports, scrapes
every instance."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
import trio

from tests.cluster.support import RunningCluster
from tests.servers import free_port

# Spellings a client might try to get past a path rule; Caddy cleans and case-folds them.
SPELLINGS = ["/metrics", "/metrics/", "/METRICS", "/Metrics", "//metrics", "/./metrics",
             "/x/../metrics", "/%6Detrics", "/metrics?format=text", "/metrics/anything"]


async def test_the_proxy_does_not_serve_metrics_but_each_instance_does(cluster: RunningCluster) -> None:
    with trio.fail_after(30):
        async with httpx.AsyncClient(timeout=5) as client:
            for port in range(cluster.base_port, cluster.base_port + cluster.instances):
                direct = await client.get(f"http://127.0.0.1:{port}/metrics")
                assert direct.status_code == 200 and "nursery_http_requests_total" in direct.text
            for path in SPELLINGS:
                # Raw, so that the client does not clean the path itself.
                stream = await trio.open_tcp_stream("127.0.0.1", cluster.proxy_port)
                async with stream:
                    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                    answer = b""
                    while chunk := await stream.receive_some(65536):
                        answer += chunk
                head, _, body = answer.partition(b"\r\n\r\n")
                assert b"nursery_" not in body, f"{path} reached an instance's metrics"
                assert head.split(b" ")[1] in (b"404", b"400"), (path, head)
            # The door stays open for everything else.
            assert (await client.get(f"{cluster.proxy_url}/readyz")).status_code == 200


async def test_prometheus_scrapes_every_instance_with_the_config_the_cluster_wrote(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    config = cluster.directory / "prometheus.yml"
    assert config.is_file()
    port = free_port()
    try:
        process = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "wb"))
    except FileNotFoundError:
        pytest.fail("prometheus is not installed: apt-get install prometheus (scripts/test installs it)")
    try:
        expected = {f"127.0.0.1:{p}" for p in range(cluster.base_port, cluster.base_port + cluster.instances)}
        healthy: set[str] = set()
        async with httpx.AsyncClient(timeout=5) as client:
            with trio.fail_after(40):
                while healthy != expected:
                    await trio.sleep(0.5)
                    try:
                        r = await client.get(f"http://127.0.0.1:{port}/api/v1/targets")
                    except httpx.TransportError:
                        continue  # not listening yet
                    targets = r.json()["data"]["activeTargets"]
                    healthy = {t["labels"]["instance"] for t in targets if t["health"] == "up"}
        assert {t["labels"]["instance"] for t in targets} == expected  # and nothing else
    finally:
        process.terminate()
        process.wait(10)
