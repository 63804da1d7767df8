"""/metrics: the series operators need, in a format Prometheus accepts (promtool)."""

from __future__ import annotations

import json
import subprocess

import httpx
import trio
from trio_websocket import open_websocket_url

from tests.harness import register, start_instance

EXPECTED = [
    "nursery_http_requests_total",
    "nursery_http_request_duration_seconds_bucket",
    "nursery_websockets_open",
    "nursery_ws_messages_sent_total",
    "nursery_broker_publishes_total",
    "nursery_broker_received_total",
    "nursery_broker_reconnects_total",
    "nursery_store_operation_duration_seconds_bucket",
    "nursery_store_pool_in_use",
    "nursery_sync_lag_seconds_bucket",
]


def _value(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


async def test_metrics_after_traffic_pass_promtool(database_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url)
            user = await register(client, instance.url)
            async with open_websocket_url(instance.ws_url) as ws:
                await ws.send_message(json.dumps({"type": "hello", "token": user.token, "since": None}))
                await ws.get_message()
                for i in range(3):
                    await client.post(f"{instance.url}/api/todos", json={"title": str(i)}, headers=user.headers)
                while json.loads(await ws.get_message()).get("rev") != 3:
                    pass
                r = await client.get(f"{instance.url}/metrics")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            text = r.text
            for name in EXPECTED:
                assert name in text, name
            assert _value(text, 'nursery_http_requests_total{method="POST",route="/api/todos",status="201"}') == 3
            assert _value(text, "nursery_websockets_open") == 1
            assert _value(text, 'nursery_ws_messages_sent_total{type="change"}') == 3
            assert _value(text, "nursery_sync_lag_seconds_count") == 3
            check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
            assert check.returncode == 0, check.stdout + check.stderr
            instance.stop()
