"""Live sync across instances (issue: live sync): real PostgreSQL, real Redis, three real
instances in one test, devices on plain websockets."""

from __future__ import annotations

import json
import resource
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.harness import Instance, login, register, start_instance
from tests.live import Device, server_state

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def three_instances(nursery: trio.Nursery, database_url: str, redis_url: str, **overrides: Any) -> list[Instance]:
    return [await start_instance(nursery, database_url, redis_url=redis_url, **overrides) for _ in range(3)]


async def write(client: httpx.AsyncClient, base: str, headers: dict[str, str], n: int) -> list[str]:
    ids = []
    for i in range(n):
        r = await client.post(f"{base}/api/todos", json={"title": f"todo {i}"}, headers=headers)
        assert r.status_code == 201, r.text
        ids.append(r.json()["todo"]["id"])
    return ids


async def test_a_write_on_one_instance_reaches_devices_on_all(database_url: str, redis_url: str) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instances = await three_instances(nursery, database_url, redis_url)
            user = await register(client, instances[0].url)
            devices = []
            for instance in instances:
                device = Device((await login(client, instance.url, user, instance.name)).token)
                await nursery.start(device.run, instance.ws_url)
                devices.append(device)
            await write(client, instances[0].url, user.headers, 20)
            for device in devices:
                await device.wait_for_rev(20)
                assert device.revs_seen == list(range(1, 21))
            assert {d.instance for d in devices} == {i.name for i in instances}
            nursery.cancel_scope.cancel()


async def test_reconnect_elsewhere_gets_exactly_the_missed_changes(database_url: str, redis_url: str) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            a, b, _ = await three_instances(nursery, database_url, redis_url)
            user = await register(client, a.url)
            ids = await write(client, a.url, user.headers, 5)
            device = Device(user.token)
            async with trio.open_nursery() as connection:
                await connection.start(device.run, a.ws_url)
                await device.wait_for_rev(5)
                connection.cancel_scope.cancel()  # the device goes offline at rev 5
            await write(client, b.url, user.headers, 5)
            r = await client.patch(f"{b.url}/api/todos/{ids[0]}", json={"done": True}, headers=user.headers)
            assert r.status_code == 200
            r = await client.delete(f"{a.url}/api/todos/{ids[1]}", headers=user.headers)
            assert r.status_code == 204
            await nursery.start(device.run, b.ws_url)  # back, on another instance
            await device.wait_for_rev(12)
            assert device.revs_seen == list(range(1, 13))
            state, rev = await server_state(client, a.url, user.headers)
            assert rev == 12 and device.todos == state
            nursery.cancel_scope.cancel()


async def test_redis_outage_mid_stream_converges(database_url: str, own_redis: Any) -> None:
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instances = await three_instances(nursery, database_url, own_redis.url)
            user = await register(client, instances[0].url)
            devices = []
            for instance in instances:
                device = Device((await login(client, instance.url, user, instance.name)).token)
                await nursery.start(device.run, instance.ws_url)
                devices.append(device)
            await write(client, instances[0].url, user.headers, 3)
            for device in devices:
                await device.wait_for_rev(3)

            own_redis.stop()
            # Writes still succeed (the store is the truth); their doorbells are lost.
            await write(client, instances[1].url, user.headers, 4)
            await trio.sleep(0.5)
            own_redis.start()
            # The subscribers resubscribe and every device refills from the store.
            for device in devices:
                await device.wait_for_rev(7, timeout=30)
            await write(client, instances[2].url, user.headers, 2)
            state, rev = await server_state(client, instances[0].url, user.headers)
            assert rev == 9
            for device in devices:
                await device.wait_for_rev(9)
                assert device.revs_seen == list(range(1, 10))
                assert device.todos == state
                assert device.close_code is None  # nobody was disconnected
            nursery.cancel_scope.cancel()


async def test_a_stalled_device_is_closed_4008_and_the_other_keeps_up(database_url: str, redis_url: str) -> None:
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            a, b, _ = await three_instances(nursery, database_url, redis_url, ws_queue_size=16, ws_send_timeout=2.0)
            user = await register(client, a.url)
            phone = await login(client, a.url, user, "phone")
            healthy = Device(user.token)
            await nursery.start(healthy.run, b.ws_url)
            # The stalled device says hello, then never reads again.
            async with open_websocket_url(a.ws_url, message_queue_size=1) as stalled:
                await stalled.send_message(json.dumps({"type": "hello", "token": phone.token, "since": None}))
                big = "x" * 9000
                rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                for i in range(600):  # ~5 MB of changes: far beyond socket buffers and the queue
                    r = await client.post(f"{a.url}/api/todos", json={"title": f"t{i}", "notes": big}, headers=user.headers)
                    assert r.status_code == 201
                    if i % 50 == 49:  # the healthy device keeps up throughout
                        await healthy.wait_for_rev(i + 1, timeout=5)
                rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                # Drain what was buffered: the stream ends with close code 4008.
                code = None
                with trio.fail_after(20):
                    try:
                        while True:
                            await stalled.get_message()
                    except ConnectionClosed as closed:
                        code = closed.reason.code
                assert code == 4008
            await healthy.wait_for_rev(600)
            assert healthy.revs_seen == list(range(1, 601))
            # Bounded: the stalled socket did not make the process hoard the 5 MB (+ slack).
            assert (rss_after - rss_before) < 64 * 1024  # ru_maxrss is in KiB
            nursery.cancel_scope.cancel()


async def test_revocation_kicks_the_device_on_another_instance_within_a_second(
    database_url: str, redis_url: str
) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            a, b, _ = await three_instances(nursery, database_url, redis_url)
            user = await register(client, a.url, "laptop")
            phone = await login(client, b.url, user, "phone")
            device = Device(phone.token)
            done = trio.Event()

            async def run_phone() -> None:
                await device.run(b.ws_url)
                done.set()

            nursery.start_soon(run_phone)
            await device.wait_for_rev(0)
            with trio.fail_after(5):
                while device.instance == "":
                    await trio.sleep(0.01)
            start = trio.current_time()
            r = await client.delete(f"{a.url}/api/sessions/{phone.session_id}", headers=user.headers)
            assert r.status_code == 204
            with trio.fail_after(1):
                await done.wait()
            assert device.close_code == 4001
            assert trio.current_time() - start < 1
            # And the token is dead everywhere: a new hello is refused with 4001 too.
            async with open_websocket_url(a.ws_url) as ws:
                await ws.send_message(json.dumps({"type": "hello", "token": phone.token, "since": None}))
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == 4001
            nursery.cancel_scope.cancel()


async def test_login_and_presence_are_pushed_to_other_devices(database_url: str, redis_url: str) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            a, b, _ = await three_instances(nursery, database_url, redis_url)
            user = await register(client, a.url, "laptop")
            async with open_websocket_url(a.ws_url) as ws:
                await ws.send_message(json.dumps({"type": "hello", "token": user.token, "since": None}))

                async def next_frame(kind: str) -> dict[str, Any]:
                    with trio.fail_after(5):
                        while True:
                            frame = json.loads(await ws.get_message())
                            if frame["type"] == kind:
                                return frame

                phone = await login(client, b.url, user, "phone")
                event = await next_frame("session")
                assert event["op"] == "created" and event["session"]["id"] == phone.session_id
                assert event["session"]["device"] == "phone"
                phone_device = Device(phone.token)
                async with trio.open_nursery() as connection:
                    await connection.start(phone_device.run, b.ws_url)
                    while set((await next_frame("presence"))["online"]) != {user.session_id, phone.session_id}:
                        pass
                    r = await client.get(f"{a.url}/api/sessions", headers=user.headers)
                    assert all(s["online"] for s in r.json()["sessions"])
                    connection.cancel_scope.cancel()
                while (await next_frame("presence"))["online"] != [user.session_id]:
                    pass
            nursery.cancel_scope.cancel()


async def test_presence_forgets_a_crashed_instance_within_seconds(database_url: str, redis_url: str) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            a, b, _ = await three_instances(nursery, database_url, redis_url, presence_ttl=3.0)
            user = await register(client, a.url, "laptop")
            phone = await login(client, b.url, user, "phone")
            phone_device = Device(phone.token)
            nursery.start_soon(phone_device.run, b.ws_url)
            with trio.fail_after(5):
                while True:
                    r = await client.get(f"{a.url}/api/sessions", headers=user.headers)
                    if {s["id"] for s in r.json()["sessions"] if s["online"]} == {phone.session_id}:
                        break
                    await trio.sleep(0.05)
            b.crash()  # no goodbye: only the TTL can clear the entry
            start = trio.current_time()
            with trio.fail_after(10):
                while True:
                    r = await client.get(f"{a.url}/api/sessions", headers=user.headers)
                    if not any(s["online"] for s in r.json()["sessions"]):
                        break
                    await trio.sleep(0.1)
            assert trio.current_time() - start <= 3.0 + 1.0
            nursery.cancel_scope.cancel()
