"""/healthz and /readyz, including readiness while an instance drains."""

from __future__ import annotations

import httpx
import trio

from tests.api.support import Api, error_of
from tests.harness import start_instance


async def test_healthz_and_readyz(api: Api) -> None:
    with trio.fail_after(10):
        r = await api.client.get("/healthz")
        assert r.status_code == 200
        assert r.json()["status"] == "ok"
        r = await api.client.get("/readyz")
        assert r.status_code == 200
        assert r.json()["status"] == "ready"
        assert r.json()["instance"] == api.instance.name


async def test_readyz_is_503_with_retry_after_while_draining(database_url: str) -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            instance = await start_instance(nursery, database_url, drain_delay=1.0)
            async with httpx.AsyncClient(base_url=instance.url, timeout=5) as client:
                assert (await client.get("/readyz")).status_code == 200
                api = Api(instance, client)
                user = await api.register()
                started = trio.current_time()
                instance.stop()
                r = await client.get("/readyz")
                error_of(r, 503, "draining")
                assert int(r.headers["Retry-After"]) >= 1
                # Still alive and still serving requests until the drain delay ends.
                assert (await client.get("/healthz")).status_code == 200
                r = await client.get("/api/todos", headers=user.headers)
                assert r.status_code == 200
                r = await client.get("/readyz")
                error_of(r, 503, "draining")
                assert trio.current_time() - started < 1.0, "checks ran too slowly to be in the drain"
        # The instance then shut down on its own (the nursery exited).
        async with httpx.AsyncClient(timeout=2) as client:
            try:
                r = await client.get(instance.url + "/healthz")
            except httpx.TransportError:
                pass
            else:
                raise AssertionError(f"still answering after shutdown: {r.status_code}")
