"""Property: whatever the interleaving of writes, disconnects, reconnects and instance
switches, every device ends with exactly the server's state, having applied each revision
at most once and in increasing order (``Device.apply`` asserts that on every frame)."""

from __future__ import annotations

from typing import Any

import httpx
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import Instance, login, register, start_instance
from tests.live import Device, server_state

INSTANCES = 3
DEVICES = 3

operation = st.one_of(
    st.tuples(st.just("create"), st.integers(0, INSTANCES - 1)),
    st.tuples(st.just("update"), st.integers(0, INSTANCES - 1), st.integers(0, 1000)),
    st.tuples(st.just("delete"), st.integers(0, INSTANCES - 1), st.integers(0, 1000)),
    st.tuples(st.just("disconnect"), st.integers(0, DEVICES - 1)),
    st.tuples(st.just("connect"), st.integers(0, DEVICES - 1), st.integers(0, INSTANCES - 1)),
    st.tuples(st.just("pause"), st.sampled_from([0.0, 0.005, 0.02])),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(operation, min_size=5, max_size=40))
async def test_every_device_converges_to_the_server_state(
    database_url: str, redis_url: str, operations: list[tuple[Any, ...]]
) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instances: list[Instance] = [
                await start_instance(nursery, database_url, redis_url=redis_url, ws_ping_interval=60)
                for _ in range(INSTANCES)
            ]
            user = await register(client, instances[0].url)
            devices = [Device((await login(client, instances[0].url, user, f"d{i}")).token) for i in range(DEVICES)]
            connections: dict[int, trio.CancelScope] = {}
            todo_ids: list[str] = []

            async def connect(index: int, instance: Instance) -> None:
                scope = trio.CancelScope()

                async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                    with scope:
                        await devices[index].run(instance.ws_url, task_status=task_status)

                await nursery.start(run)
                connections[index] = scope

            for op in operations:
                kind, base = op[0], instances[op[1]].url if op[0] in {"create", "update", "delete"} else None
                if kind == "create":
                    r = await client.post(f"{base}/api/todos", json={"title": "t"}, headers=user.headers)
                    assert r.status_code == 201
                    todo_ids.append(r.json()["todo"]["id"])
                elif kind in {"update", "delete"} and todo_ids:
                    todo_id = todo_ids[op[2] % len(todo_ids)]
                    if kind == "update":
                        r = await client.patch(f"{base}/api/todos/{todo_id}", json={"title": f"u{op[2]}", "done": op[2] % 2 == 0}, headers=user.headers)
                        assert r.status_code == 200
                    else:
                        r = await client.delete(f"{base}/api/todos/{todo_id}", headers=user.headers)
                        assert r.status_code == 204
                        todo_ids.remove(todo_id)
                elif kind == "disconnect" and op[1] in connections:
                    connections.pop(op[1]).cancel()
                elif kind == "connect":
                    if op[1] in connections:  # an instance switch
                        connections.pop(op[1]).cancel()
                        await trio.sleep(0)
                    await connect(op[1], instances[op[2]])
                elif kind == "pause":
                    await trio.sleep(op[1])

            for index in range(DEVICES):
                if index not in connections:
                    await connect(index, instances[index % INSTANCES])
            state, rev = await server_state(client, instances[0].url, user.headers)
            for device in devices:
                await device.wait_for_rev(rev)
                assert device.todos == state
                assert len(set(device.revs_seen)) == len(device.revs_seen)
            nursery.cancel_scope.cancel()
