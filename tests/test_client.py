"""nursery.client: the pure parts (Mirror, Backoff), the connection policy against a scripted
fake /ws server (virtual clock), and end to end against real instances."""

from __future__ import annotations

import contextlib
import io
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, WebSocketRequest, serve_websocket

from nursery.client import (
    Backoff,
    ClientConfig,
    ClientError,
    Ending,
    Mirror,
    ProtocolViolation,
    RequestFailed,
    SessionEnded,
    SyncClient,
    ws_url,
)
from nursery.watch import watch
from tests.harness import login, register, start_instance


def todo(id: str, rev: int, title: str = "t") -> dict[str, Any]:
    return {"id": id, "rev": rev, "title": title, "done": False, "created_at": f"2025-01-01T00:00:{rev:02}Z"}


def upsert(rev: int, id: str, title: str = "t") -> dict[str, Any]:
    return {"type": "change", "rev": rev, "op": "upsert", "todo": todo(id, rev, title)}


def delete(rev: int, id: str) -> dict[str, Any]:
    return {"type": "change", "rev": rev, "op": "delete", "id": id}


# -- Mirror ----------------------------------------------------------------------------------


def test_mirror_applies_upserts_and_deletes_in_order() -> None:
    mirror = Mirror()
    mirror.load([todo("a", 1)], rev=1)
    assert mirror.apply(upsert(2, "b", "bee"))
    assert mirror.apply(upsert(3, "a", "ay"))
    assert mirror.apply(delete(5, "b"))  # revisions may skip (a compacted backlog)
    assert mirror.rev == 5
    assert {i: t["title"] for i, t in mirror.todos.items()} == {"a": "ay"}
    assert (mirror.applied, mirror.ignored) == (3, 0)


def test_mirror_ignores_duplicates_and_older_revisions() -> None:
    mirror = Mirror()
    mirror.load([], rev=10)
    assert not mirror.apply(upsert(9, "old"))
    assert not mirror.apply(upsert(10, "same"))
    assert mirror.apply(upsert(11, "new"))
    assert not mirror.apply(delete(11, "new"))
    assert list(mirror.todos) == ["new"]
    assert (mirror.rev, mirror.applied, mirror.ignored) == (11, 1, 3)


def test_mirror_delete_of_an_unknown_todo_is_harmless() -> None:
    mirror = Mirror()
    mirror.load([], rev=0)
    assert mirror.apply(delete(1, "never-seen"))
    assert mirror.todos == {} and mirror.rev == 1


def test_mirror_load_replaces_everything_even_backwards() -> None:
    mirror = Mirror()
    assert not mirror.loaded
    mirror.load([todo("a", 7)], rev=50)
    mirror.load([todo("b", 2)], rev=3)  # a reset to another history
    assert mirror.loaded and mirror.rev == 3 and list(mirror.todos) == ["b"]


def test_mirror_keeps_a_newer_todo_from_a_later_page() -> None:
    # Page 1 was read at rev 10; page 2 already had "a" at rev 12. The backlog brings rev 11.
    mirror = Mirror()
    mirror.load([todo("a", 12, "newest")], rev=10)
    mirror.apply(upsert(11, "a", "older"))
    mirror.apply(upsert(12, "a", "newest"))
    assert mirror.todos["a"]["title"] == "newest" and mirror.rev == 12


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "change", "op": "upsert", "todo": todo("a", 1)},
        {"type": "change", "rev": "1", "op": "delete", "id": "a"},
        {"type": "change", "rev": 1, "op": "upsert", "todo": {"title": "no id"}},
        {"type": "change", "rev": 1, "op": "rename", "id": "a"},
        {"type": "change", "rev": 1, "op": "delete"},
    ],
)
def test_mirror_rejects_malformed_changes(frame: dict[str, Any]) -> None:
    mirror = Mirror()
    with pytest.raises(ProtocolViolation):
        mirror.apply(frame)
    assert mirror.rev == 0 and mirror.applied == 0


def test_ws_url() -> None:
    assert ws_url("http://h:4000") == "ws://h:4000/ws"
    assert ws_url("https://h/prefix/") == "wss://h/prefix/ws"
    with pytest.raises(ValueError):
        ws_url("ftp://h")


# -- Backoff ---------------------------------------------------------------------------------

FAILED = Ending(None, "refused")


def test_backoff_grows_exponentially_up_to_the_max() -> None:
    backoff = Backoff(0.1, 1.0, rng=lambda: 1.0)
    delays = [backoff.delay_after(FAILED) for _ in range(7)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_backoff_has_full_jitter() -> None:
    rng = random.Random(7)
    backoff = Backoff(0.1, 10.0, rng=rng.random)
    for _ in range(40):
        ceiling = backoff.ceiling()
        assert 0 <= backoff.delay_after(FAILED) <= ceiling
    assert backoff.ceiling() == 10.0
    delays = [backoff.delay_after(FAILED) for _ in range(20)]
    assert len(set(delays)) == 20 and max(delays) <= 10.0 and min(delays) < 5.0


def test_backoff_resets_after_a_stable_connection_only() -> None:
    backoff = Backoff(0.1, 10.0, stable_after=10.0, rng=lambda: 1.0)
    for _ in range(5):
        backoff.delay_after(FAILED)
    assert backoff.delay_after(Ending(1011, "", welcomed=True, uptime=3.0)) == pytest.approx(3.2)
    assert backoff.delay_after(Ending(1011, "", welcomed=True, uptime=60.0)) == pytest.approx(0.1)


def test_backoff_restart_is_prompt_once_in_a_row() -> None:
    backoff = Backoff(0.1, 10.0, restart_jitter=0.5, stable_after=10.0, rng=lambda: 1.0)
    restarted = Ending(1012, "restarting", welcomed=True, uptime=1.0)
    assert backoff.delay_after(restarted) == 0.5  # at once, within the jitter
    assert backoff.delay_after(restarted) == pytest.approx(0.1)  # again, before it was stable
    assert backoff.delay_after(Ending(4008, "slow", welcomed=True, uptime=2.0)) == pytest.approx(0.2)
    assert backoff.delay_after(Ending(1012, "", welcomed=True, uptime=30.0)) == 0.5  # stable: prompt again
    assert backoff.delay_after(Ending(1012, "restarting before welcome")) == pytest.approx(0.1)


def test_backoff_honours_retry_after() -> None:
    backoff = Backoff(0.1, 10.0, rng=lambda: 1.0)
    assert backoff.delay_after(Ending(None, "HTTP 503", retry_after=4.0)) == 4.0


# -- against a scripted fake server (virtual clock) ------------------------------------------

Script = Callable[[WebSocketConnection, dict[str, Any]], Awaitable[None]]


@dataclass
class FakeServer:
    """A /ws whose n-th connection runs ``scripts[n]`` (the last one repeats) after recording
    the hello (with the time) and every later frame the client sends."""

    scripts: list[Script]
    hellos: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: WebSocketRequest) -> None:
        ws = await request.accept()
        hello = json.loads(await ws.get_message())
        n = len(self.hellos)
        self.hellos.append((trio.current_time(), hello))
        await self.scripts[min(n, len(self.scripts) - 1)](ws, hello)

    async def record(self, ws: WebSocketConnection) -> None:
        """Read (and do not answer) everything the client sends, until it leaves."""
        async for message in _messages(ws):
            self.received.append(message)

    def gaps(self) -> list[float]:
        times = [t for t, _ in self.hellos]
        return [b - a for a, b in zip(times, times[1:], strict=False)]


async def _messages(ws: WebSocketConnection) -> Any:
    try:
        while True:
            yield json.loads(await ws.get_message())
    except Exception:  # noqa: BLE001 - the fake server's client left: its script ends
        return


async def serve_fake(nursery: trio.Nursery, *scripts: Script) -> FakeServer:
    fake = FakeServer(list(scripts))
    server = await nursery.start(partial(serve_websocket, fake.handle, "127.0.0.1", 0, ssl_context=None))
    fake.port = server.port
    return fake


def welcome(rev: int, instance: str = "fake") -> str:
    return json.dumps({"type": "welcome", "session": "s1", "instance": instance, "rev": rev})


def close_with(code: int, *frames: dict[str, Any], welcome_rev: int | None = None) -> Script:
    async def script(ws: WebSocketConnection, hello: dict[str, Any]) -> None:
        if welcome_rev is not None:
            await ws.send_message(welcome(welcome_rev))
        for frame in frames:
            await ws.send_message(json.dumps(frame))
        await ws.aclose(code, "scripted")

    return script


def stay(*frames: dict[str, Any], welcome_rev: int = 0) -> Script:
    """Welcome, send ``frames``, then keep the connection open, answering pings."""

    async def script(ws: WebSocketConnection, hello: dict[str, Any]) -> None:
        await ws.send_message(welcome(welcome_rev))
        for frame in frames:
            await ws.send_message(json.dumps(frame))
        async for message in _messages(ws):
            if message["type"] == "ping":
                await ws.send_message(json.dumps({"type": "pong"}))

    return script


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` (for the fake server's state, which the client does not signal)."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def loaded(rev: int) -> Mirror:
    """A mirror that was loaded before, so the client resumes without the REST list."""
    mirror = Mirror()
    mirror.load([], rev)
    return mirror


FAST = ClientConfig(backoff_initial=0.1, backoff_max=1.0, restart_jitter=0.5, stable_after=10.0)


async def test_4001_ends_the_session_for_good(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            fake = await serve_fake(nursery, close_with(4001))
            client = SyncClient(fake.url, "token", mirror=loaded(3), config=FAST)
            with pytest.raises(SessionEnded, match="scripted"):
                await client.run()
            await trio.sleep(30)  # and nothing tries again
            assert len(fake.hellos) == 1 and fake.hellos[0][1] == {"type": "hello", "token": "token", "since": 3}
            with pytest.raises(SessionEnded):
                await client.wait_for_rev(4)
            nursery.cancel_scope.cancel()


async def test_4001_after_welcome_keeps_what_was_received(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            fake = await serve_fake(nursery, close_with(4001, upsert(4, "a"), welcome_rev=4))
            client = SyncClient(fake.url, "token", mirror=loaded(3), config=FAST)
            with pytest.raises(SessionEnded):
                await client.run()
            assert client.mirror.rev == 4 and list(client.mirror.todos) == ["a"]
            assert not client.connected and len(fake.hellos) == 1
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("code", [1012, 4008])
async def test_restart_or_too_slow_reconnects_at_once_and_resumes(
    autojump_clock: trio.testing.MockClock, code: int
) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            fake = await serve_fake(
                nursery, close_with(code, upsert(6, "a"), delete(7, "a"), upsert(8, "b"), welcome_rev=8), stay(welcome_rev=8)
            )
            client = SyncClient(fake.url, "token", mirror=loaded(5), config=FAST, rng=lambda: 1.0)
            await nursery.start(client.run)
            await client.wait_until(lambda: client.welcomes == 2)
            assert [hello["since"] for _, hello in fake.hellos] == [5, 8]
            assert fake.gaps() == pytest.approx([0.5], abs=0.01)  # restart_jitter, not backoff
            assert client.connected and client.last_ending is not None
            assert client.last_ending.code == code
            assert (client.mirror.rev, list(client.mirror.todos)) == (8, ["b"])
            assert (client.mirror.applied, client.mirror.ignored) == (3, 0)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("code", [1013, 1011, 4029])
async def test_repeated_failures_back_off_up_to_the_max(autojump_clock: trio.testing.MockClock, code: int) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            fake = await serve_fake(nursery, close_with(code))
            client = SyncClient(fake.url, "token", mirror=loaded(1), config=FAST, rng=lambda: 1.0)
            nursery.start_soon(client.run)
            await eventually(lambda: len(fake.hellos) >= 7)
            assert fake.gaps() == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0], abs=0.01)
            assert all(hello["since"] == 1 for _, hello in fake.hellos)
            nursery.cancel_scope.cancel()


async def test_backoff_delays_are_jittered(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            fake = await serve_fake(nursery, close_with(1013))
            rng = random.Random(1)
            client = SyncClient(fake.url, "token", mirror=loaded(1), config=FAST, rng=rng.random)
            nursery.start_soon(client.run)
            await eventually(lambda: len(fake.hellos) >= 12, timeout=100)
            gaps = fake.gaps()
            ceilings = [min(1.0, 0.1 * 2**n) for n in range(len(gaps))]
            assert all(0 <= gap <= ceiling + 0.01 for gap, ceiling in zip(gaps, ceilings, strict=True))
            assert len({round(gap, 4) for gap in gaps}) == len(gaps)  # no two alike
            nursery.cancel_scope.cancel()


async def test_refused_connections_back_off(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = listener.getsockname()[1]
        seen: list[tuple[float, Any]] = []

        def on_event(frame: dict[str, Any]) -> None:
            seen.append((trio.current_time(), frame.get("retry_in")))

        client = SyncClient(f"http://127.0.0.1:{port}", "t", mirror=loaded(0), config=FAST,
                            on_event=on_event, rng=lambda: 1.0)
        with trio.move_on_after(2.5):
            await client.run()
        assert [retry for _, retry in seen] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])
        assert not client.connected and client.welcomes == 0
        listener.close()


async def test_no_welcome_in_time_is_a_failure(autojump_clock: trio.testing.MockClock) -> None:
    async def mute(ws: WebSocketConnection, hello: dict[str, Any]) -> None:
        await trio.sleep_forever()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            fake = await serve_fake(nursery, mute)
            config = ClientConfig(hello_timeout=5.0, backoff_initial=1.0, close_timeout=0.5)
            client = SyncClient(fake.url, "token", mirror=loaded(1), config=config, rng=lambda: 1.0)
            nursery.start_soon(client.run)
            await eventually(lambda: len(fake.hellos) >= 2)
            # 5 s for the welcome, then 1 s of backoff (the server's library answers the close).
            assert fake.gaps() == pytest.approx([6.0], abs=0.05)
            assert client.last_ending is not None and client.last_ending.reason == "timed out"
            nursery.cancel_scope.cancel()


async def test_silence_is_a_dead_connection(autojump_clock: trio.testing.MockClock) -> None:
    async def silent(ws: WebSocketConnection, hello: dict[str, Any]) -> None:
        await ws.send_message(welcome(1))
        await fake.record(ws)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            fake = await serve_fake(nursery, silent)
            config = ClientConfig(ping_interval=15.0, ping_timeout=10.0, backoff_initial=1.0)
            client = SyncClient(fake.url, "token", mirror=loaded(1), config=config, rng=lambda: 1.0)
            await nursery.start(client.run)
            await client.wait_until(lambda: not client.connected, timeout=100)
            assert trio.current_time() - fake.hellos[0][0] == pytest.approx(25.0, abs=0.05)
            assert fake.received == [{"type": "ping"}]
            await eventually(lambda: len(fake.hellos) == 2, timeout=100)
            nursery.cancel_scope.cancel()


async def test_pings_keep_a_quiet_connection_alive(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            fake = await serve_fake(nursery, stay(welcome_rev=1))
            client = SyncClient(fake.url, "token", mirror=loaded(1), config=FAST)
            await nursery.start(client.run)
            await trio.sleep(300)
            assert client.connected and client.welcomes == 1 and len(fake.hellos) == 1
            nursery.cancel_scope.cancel()


async def test_answers_pings_and_tracks_presence(autojump_clock: trio.testing.MockClock) -> None:
    async def chatty(ws: WebSocketConnection, hello: dict[str, Any]) -> None:
        await ws.send_message(welcome(1))
        await ws.send_message(json.dumps({"type": "presence", "online": ["s1", "s2"]}))
        await ws.send_message(json.dumps({"type": "session", "op": "created", "session": {"id": "s3"}}))
        await ws.send_message(json.dumps({"type": "ping"}))
        await fake.record(ws)

    events: list[str] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            fake = await serve_fake(nursery, chatty)
            client = SyncClient(fake.url, "token", mirror=loaded(1), config=FAST,
                                on_event=lambda frame: events.append(frame["type"]))
            await nursery.start(client.run)
            await client.wait_until(lambda: "ping" in events)
            await trio.sleep(1)
            assert fake.received == [{"type": "pong"}]
            assert client.presence == ["s1", "s2"] and client.instance == "fake"
            assert events == ["welcome", "presence", "session", "ping"]
            nursery.cancel_scope.cancel()


async def test_a_list_of_urls_is_cycled_through(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            first = await serve_fake(nursery, close_with(1012, upsert(2, "a"), welcome_rev=2))
            second = await serve_fake(nursery, stay(welcome_rev=2))
            client = SyncClient([first.url, second.url], "token", mirror=loaded(1), config=FAST)
            await nursery.start(client.run)
            await client.wait_until(lambda: client.welcomes == 2)
            assert len(first.hellos) == 1 and second.hellos[0][1]["since"] == 2
            nursery.cancel_scope.cancel()


async def test_a_malformed_frame_stops_the_client(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            fake = await serve_fake(nursery, stay({"type": "change", "rev": 2, "op": "?"}, welcome_rev=2))
            client = SyncClient(fake.url, "token", mirror=loaded(1), config=FAST)
            with pytest.raises(ProtocolViolation):
                await client.run()
            with pytest.raises(ClientError):
                await client.wait_for_rev(2)
            nursery.cancel_scope.cancel()


async def test_wait_for_rev_times_out(autojump_clock: trio.testing.MockClock) -> None:
    client = SyncClient("http://127.0.0.1:1", "token")
    with trio.fail_after(60), pytest.raises(trio.TooSlowError):
        await client.wait_for_rev(1, timeout=5)


# -- end to end, against real instances ------------------------------------------------------


async def server_state(http: httpx.AsyncClient, base: str, headers: dict[str, str]) -> tuple[dict[str, Any], int]:
    r = await http.get(f"{base}/api/todos", params={"limit": 200}, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["next_cursor"] is None
    return {t["id"]: t for t in body["items"]}, body["rev"]


class Revs:
    """The revisions of the change frames one client received, in order."""

    def __init__(self) -> None:
        self.revs: list[int] = []

    def __call__(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "change":
            self.revs.append(frame["rev"])

    def strictly_increasing(self) -> bool:
        return all(a < b for a, b in zip(self.revs, self.revs[1:], strict=False))


async def test_two_devices_stay_in_sync_across_an_instance_restart(database_url: str, redis_url: str) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
            # Two instances, one database, one Redis: a deployment without the proxy.
            a = await start_instance(nursery, database_url, redis_url=redis_url)
            b = await start_instance(nursery, database_url, redis_url=redis_url)
            laptop = await register(http, a.url, "laptop")
            phone = await login(http, a.url, laptop, "phone")
            for n in range(5):  # read back in pages of 2 at the start
                r = await http.post(f"{a.url}/api/todos", json={"title": f"before {n}"}, headers=laptop.headers)
                assert r.status_code == 201

            # The laptop may use either instance (no proxy); it starts on A. The phone is on B.
            config = ClientConfig(page_size=2, restart_jitter=2.0)
            laptop_revs, phone_revs = Revs(), Revs()
            on_laptop = SyncClient([a.url, b.url], laptop.token, config=config, on_event=laptop_revs, rng=lambda: 1.0)
            on_phone = SyncClient(b.url, phone.token, config=config, on_event=phone_revs)
            await nursery.start(on_laptop.run)
            await nursery.start(on_phone.run)
            assert (on_laptop.instance, on_phone.instance) == (a.name, b.name)
            assert len(on_laptop.mirror.todos) == len(on_phone.mirror.todos) == 5

            r = await http.post(f"{b.url}/api/todos", json={"title": "live"}, headers=phone.headers)
            live = r.json()["todo"]
            for client in (on_laptop, on_phone):
                await client.wait_for_rev(live["rev"], timeout=10)
                assert client.mirror.todos[live["id"]] == live

            a.stop()  # graceful: the laptop's websocket gets 1012, A goes away
            await on_laptop.wait_until(lambda: not on_laptop.connected, timeout=10)
            assert on_laptop.last_ending is not None and on_laptop.last_ending.code == 1012
            # While the laptop is away (it comes back after restart_jitter = 2 s):
            ids = [t["id"] for t in (await server_state(http, b.url, phone.headers))[0].values()]
            await http.patch(f"{b.url}/api/todos/{ids[0]}", json={"done": True}, headers=phone.headers)
            await http.delete(f"{b.url}/api/todos/{ids[1]}", headers=phone.headers)
            await http.post(f"{b.url}/api/todos", json={"title": "while away"}, headers=phone.headers)
            assert not on_laptop.connected

            todos, rev = await server_state(http, b.url, phone.headers)
            for client in (on_laptop, on_phone):
                await client.wait_for_rev(rev, timeout=10)
                assert client.mirror.todos == todos and client.mirror.rev == rev
                assert client.mirror.ignored == 0
            assert on_laptop.instance == b.name and on_laptop.welcomes == 2
            assert laptop_revs.strictly_increasing() and phone_revs.strictly_increasing()
            assert on_laptop.mirror.applied == len(laptop_revs.revs)
            b.stop()
            nursery.cancel_scope.cancel()


async def test_a_revision_from_another_history_is_reset(database_url: str) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
            a = await start_instance(nursery, database_url)
            user = await register(http, a.url)
            await http.post(f"{a.url}/api/todos", json={"title": "real"}, headers=user.headers)
            stale = Mirror()
            stale.load([todo("ghost", 900)], rev=1000)  # e.g. saved against a database since replaced
            events: list[str] = []
            client = SyncClient(a.url, user.token, mirror=stale, on_event=lambda f: events.append(f["type"]))
            await nursery.start(client.run)
            todos, rev = await server_state(http, a.url, user.headers)
            await client.wait_until(lambda: "loaded" in events)
            assert client.mirror.todos == todos and client.mirror.rev == rev
            assert events[:3] == ["welcome", "loaded", "reset"]  # a frame is reported once handled
            a.stop()
            nursery.cancel_scope.cancel()


async def run_until_ended(client: SyncClient, *, task_status: trio.TaskStatus[None]) -> None:
    with contextlib.suppress(SessionEnded):
        await client.run(task_status=task_status)


async def test_a_revoked_session_ends_the_client(database_url: str) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
            a = await start_instance(nursery, database_url)
            laptop = await register(http, a.url, "laptop")
            phone = await login(http, a.url, laptop, "phone")
            client = SyncClient(a.url, phone.token)
            await nursery.start(run_until_ended, client)
            r = await http.delete(f"{a.url}/api/sessions/{phone.session_id}", headers=laptop.headers)
            assert r.status_code == 204
            with pytest.raises(SessionEnded):
                await client.wait_until(lambda: False, timeout=10)
            with pytest.raises(SessionEnded):  # and a new start is refused at once
                await SyncClient(a.url, phone.token).run()
            a.stop()
            nursery.cancel_scope.cancel()


async def test_watch_prints_the_todos_then_each_change_as_a_line(database_url: str) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
            a = await start_instance(nursery, database_url)
            user = await register(http, a.url)
            first = (await http.post(f"{a.url}/api/todos", json={"title": "first", "tags": ["home"]},
                                     headers=user.headers)).json()["todo"]
            out = io.StringIO()
            with pytest.raises(RequestFailed, match="401"):
                await watch(a.url, user.email, "wrong password", out)
            out = io.StringIO()
            nursery.start_soon(watch, a.url, user.email, user.password, out)

            async def printed(text: str) -> list[str]:
                """The lines (timestamps cut) once one of them ends with ``text``."""
                with trio.fail_after(10):
                    while True:
                        lines = [line[10:] for line in out.getvalue().splitlines()]
                        if any(line.endswith(text) for line in lines):
                            return lines
                        await trio.sleep(0.02)

            lines = await printed("connected to " + a.name)
            # It starts by saying it is connecting, then the list once, then where it is.
            assert lines[0] == f"connecting to {a.url} as {user.email} …"
            assert lines[1:4] == ["1 todo(s) at rev 1", "  [ ] first  #home", f"connected to {a.name}"]
            second = (await http.post(f"{a.url}/api/todos", json={"title": "second"},
                                      headers=user.headers)).json()["todo"]
            await printed("rev 2  added    [ ] second")
            await http.patch(f"{a.url}/api/todos/{second['id']}", json={"done": True}, headers=user.headers)
            await printed("rev 3  changed  [x] second")
            await http.delete(f"{a.url}/api/todos/{first['id']}", headers=user.headers)
            lines = await printed("rev 4  deleted  first")
            # A line per change: the list is never printed again.
            assert sum("first  #home" in line for line in lines) == 1
            a.stop()
            nursery.cancel_scope.cancel()
