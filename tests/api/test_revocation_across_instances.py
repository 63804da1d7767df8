"""Revocation with the session cache (service/session_cache.py), across two real instances
sharing PostgreSQL and Redis: a device's token, trusted from the cache on one instance, stops
working there as soon as another instance revokes it; with Redis down nothing is trusted from
the cache at all."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from tests.harness import login, register, start_instance


async def test_a_revocation_on_one_instance_locks_the_device_out_of_the_others(
    database_url: str, redis_url: str
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            a = await start_instance(nursery, database_url, redis_url=redis_url)
            b = await start_instance(nursery, database_url, redis_url=redis_url)
            user = await register(client, a.url)
            phone = await login(client, b.url, user, "phone")
            for _ in range(3):  # b now knows the phone's session (cached)
                assert (await client.get(f"{b.url}/api/me", headers=phone.headers)).status_code == 200

            r = await client.delete(f"{a.url}/api/sessions/{phone.session_id}", headers=user.headers)
            assert r.status_code == 204
            revoked_at = trio.current_time()
            while (await client.get(f"{b.url}/api/me", headers=phone.headers)).status_code == 200:
                await trio.sleep(0.005)
            # the broker's announcement, not the cache's 10 s lifetime, ended it
            assert trio.current_time() - revoked_at < 1.0
            assert (await client.get(f"{a.url}/api/me", headers=phone.headers)).status_code == 401
            nursery.cancel_scope.cancel()


async def test_with_the_broker_down_every_request_asks_the_database(
    database_url: str, own_redis: Any
) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            settings = {"broker_timeout": 0.5}
            a = await start_instance(nursery, database_url, redis_url=own_redis.url, **settings)
            b = await start_instance(nursery, database_url, redis_url=own_redis.url, **settings)
            user = await register(client, a.url)
            phone = await login(client, b.url, user, "phone")
            assert (await client.get(f"{b.url}/api/me", headers=phone.headers)).status_code == 200

            own_redis.stop()
            # b notices the lost subscription ...
            with trio.fail_after(10):
                while "nursery_broker_reconnects_total 1.0" not in (await client.get(f"{b.url}/metrics")).text:
                    await trio.sleep(0.05)
            # ... and from then on a revocation it cannot hear of still locks the device out
            r = await client.delete(f"{a.url}/api/sessions/{phone.session_id}", headers=user.headers)
            assert r.status_code == 204
            assert (await client.get(f"{b.url}/api/me", headers=phone.headers)).status_code == 401
            nursery.cancel_scope.cancel()
