"""Rate limits, shared by every instance through Redis: brute force, registrations, writes,
websocket floods; and what a Redis outage does to them (never a 500)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from nursery.redis import resp
from tests.harness import register, start_instance


async def test_the_n_plus_first_failed_login_is_429_on_any_instance(database_url: str, redis_url: str) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            limits = {"login_rate_per_account": "5/60"}
            a = await start_instance(nursery, database_url, redis_url=redis_url, **limits)
            b = await start_instance(nursery, database_url, redis_url=redis_url, **limits)
            user = await register(client, a.url)
            wrong = {"email": user.email, "password": "not the password"}
            for attempt in range(5):
                r = await client.post(f"{(a, b)[attempt % 2].url}/api/auth/login", json=wrong)
                assert r.status_code == 401
            for instance in (a, b):
                r = await client.post(f"{instance.url}/api/auth/login", json=wrong)
                assert r.status_code == 429
                assert r.json()["error"]["code"] == "rate_limited"
                assert 1 <= int(r.headers["Retry-After"]) <= 13
            # Even the right password waits: the account is being guessed at.
            r = await client.post(f"{b.url}/api/auth/login", json={"email": user.email, "password": user.password})
            assert r.status_code == 429
            nursery.cancel_scope.cancel()


async def test_registrations_per_address_and_the_proxy_header(database_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            direct = await start_instance(nursery, database_url, register_rate_per_client="2/600")
            proxied = await start_instance(nursery, database_url, register_rate_per_client="2/600",
                                           trust_proxy_headers=True)

            async def register_from(instance: Any, forwarded: str | None) -> int:
                headers = {"X-Forwarded-For": forwarded} if forwarded else {}
                body = {"email": f"{trio.current_time()}@x.io", "password": "long enough"}
                return (await client.post(f"{instance.url}/api/auth/register", json=body, headers=headers)).status_code

            # Without trust, a forged header changes nothing: the third is refused.
            assert [await register_from(direct, f"10.0.0.{i}") for i in range(3)] == [201, 201, 429]
            # Behind the proxy, the address the proxy saw (the last hop) counts.
            assert [await register_from(proxied, "6.6.6.6, 10.0.0.1") for _ in range(3)] == [201, 201, 429]
            assert await register_from(proxied, "6.6.6.6, 10.0.0.2") == 201
            nursery.cancel_scope.cancel()


async def test_writes_per_user(database_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url, write_rate_per_user="3/60")
            user, other = await register(client, instance.url), await register(client, instance.url)
            codes = [(await client.post(f"{instance.url}/api/todos", json={"title": "t"}, headers=user.headers)).status_code
                     for _ in range(4)]
            assert codes == [201, 201, 201, 429]
            r = await client.get(f"{instance.url}/api/todos", headers=user.headers)
            assert r.status_code == 200 and len(r.json()["items"]) == 3  # reads are not writes
            r = await client.post(f"{instance.url}/api/todos", json={"title": "t"}, headers=other.headers)
            assert r.status_code == 201  # another user is not affected
            nursery.cancel_scope.cancel()


async def test_writes_per_user_are_shared_by_the_instances(database_url: str, redis_url: str) -> None:
    """Writes are limited locally at once and shared in ~50 ms batches: another instance may
    let one more through before it hears, never a whole second quota."""
    with trio.fail_after(30):
        async with (
            trio.open_nursery() as nursery,
            httpx.AsyncClient() as client,
            resp.Client.open(redis_url, timeout=5) as redis,
        ):
            a, b = [await start_instance(nursery, database_url, redis_url=redis_url,
                                         write_rate_per_user="3/60") for _ in range(2)]
            user = await register(client, a.url)
            counter = f"nursery:rate:write:user:{{{user.user_id}}}"

            async def write(instance: Any) -> int:
                r = await client.post(f"{instance.url}/api/todos", json={"title": "t"}, headers=user.headers)
                return r.status_code

            async def charges(instance: Any) -> int:
                """Batches of hits the instance shared and heard the answer to (its metric)."""
                text = (await client.get(f"{instance.url}/metrics")).text
                (line,) = [ln for ln in text.splitlines() if ln.startswith("nursery_rate_limit_charges_total ")]
                return int(float(line.split()[1]))

            async def heard(instance: Any, before: int) -> None:
                while await charges(instance) == before:
                    await trio.sleep(0.01)

            async def shared_hits() -> float:
                """The hits the shared counter holds now (its GCRA state, in Redis)."""
                tat, (seconds, micros) = await redis.pipeline([("GET", counter), ("TIME",)])
                ahead = int(tat or 0) - (int(seconds) * 1_000_000 + int(micros))
                return ahead / 20_000_000  # one hit is one interval: 60 s / 3

            b_charges = await charges(b)
            assert [await write(a) for _ in range(3)] == [201, 201, 201]
            while await shared_hits() <= 2.5:  # a has shared its three writes
                await trio.sleep(0.01)
            assert await write(b) == 201  # b has not heard of them: one past the limit
            await heard(b, b_charges)  # b shared its write and heard the user is over
            assert [await write(b) for _ in range(3)] == [429, 429, 429]
            assert await write(a) == 429
            nursery.cancel_scope.cancel()


async def test_redis_outage_fails_open_for_writes_and_closed_for_logins(database_url: str, own_redis: Any) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url, redis_url=own_redis.url,
                                            write_rate_per_user="100/60", login_rate_per_account="100/60",
                                            broker_timeout=1.0)
            user = await register(client, instance.url)
            own_redis.stop()
            r = await client.post(f"{instance.url}/api/todos", json={"title": "during the outage"}, headers=user.headers)
            assert r.status_code == 201
            r = await client.post(f"{instance.url}/api/auth/login", json={"email": user.email, "password": user.password})
            assert r.status_code == 503 and "Retry-After" in r.headers
            # the write's shared count is given up on at the next batch (broker_timeout)
            with trio.fail_after(5):
                while "nursery_rate_limit_failed_open_total 1.0" not in (
                    await client.get(f"{instance.url}/metrics")
                ).text:
                    await trio.sleep(0.05)
            own_redis.start()
            nursery.cancel_scope.cancel()


async def test_a_websocket_flood_is_closed_4029_and_others_do_not_notice(database_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url, ws_message_rate="10/1")
            user = await register(client, instance.url)
            async with open_websocket_url(instance.ws_url) as calm, open_websocket_url(instance.ws_url) as flood:
                for ws in (calm, flood):
                    await ws.send_message(json.dumps({"type": "hello", "token": user.token, "since": None}))
                    assert json.loads(await ws.get_message())["type"] == "welcome"
                code = None
                try:
                    for _ in range(200):
                        await flood.send_message('{"type":"ping"}')
                    while True:
                        await flood.get_message()
                except ConnectionClosed as closed:
                    code = closed.reason.code
                assert code == 4029
                await client.post(f"{instance.url}/api/todos", json={"title": "still live"}, headers=user.headers)
                while (frame := json.loads(await calm.get_message()))["type"] != "change":
                    pass
                assert frame["todo"]["title"] == "still live"
            nursery.cancel_scope.cancel()
