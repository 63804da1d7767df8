"""Websocket fuzzing: /ws and the GraphQL websocket get random bytes, binary frames, frames
over ws_max_message_bytes, invalid and deeply nested JSON, wrong types, unknown types, a
second hello or connection_init, floods, and raw frames no client library would send.

Throughout, an observer (another device, connected to both sockets before the first attack)
must keep receiving its user's changes on time and never be disconnected; afterwards the
instance is ready, no connection is left behind, and nothing was logged as an unexpected
error. Every attacking connection must end with one of its protocol's close codes, never
1011/4500 (internal error) or a dropped connection, or still be open and answering pings.

The hypothesis engine runs in a worker thread and hands each example to the trio loop that
serves the instance and the observer (``trio.from_thread.run``), so one instance and one
observer see the whole run. NURSERY_WS_FUZZ_EXAMPLES sets the number of examples.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from nursery.config import Settings
from tests.edge.echo import handshake
from tests.harness import Instance, User, hello, login, register, start_instance
from tests.security.world import closed_with, frame

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

SUBPROTOCOL = "graphql-transport-ws"
MAX_MESSAGE = Settings().ws_max_message_bytes  # the default: deep enough JSON fits in a frame
EXAMPLES = int(os.environ.get("NURSERY_WS_FUZZ_EXAMPLES", "150"))
WRITE_PERIOD = 0.1  # the observer's user writes this often during the fuzz
ATTACK_TIMEOUT = 10.0
MAX_LAG = 2.0  # seconds from a write's answer to its change on the observer's sockets

# What each endpoint may close an attacker with. Anything else (1011 and 4500: internal
# error; 1006: dropped without a close frame; 1013: store down) is a failure.
WS_CODES = {1002, 1007, 1008, 1009, 4001, 4008, 4029}
GRAPHQL_CODES = {1002, 1007, 1009, 4008, 4029, 4400, 4401, 4403, 4408, 4409, 4429}

# -- what an example is ----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
message_types = st.sampled_from(
    ["hello", "ping", "pong", "welcome", "change", "reset", "session", "presence", "connection_init",
     "connection_ack", "subscribe", "next", "error", "complete", "HELLO", "", "hello "]
) | st.text(max_size=12)
QUERIES = [
    "subscription { todoChanged(since: 0) { kind rev change { id todo { title } } } }",
    "subscription { todoChanged { kind rev } }",
    "subscription { sessionEvents { kind online } }",
    "{ me { id email } }",
    "{ todos { nodes { id title } rev } }",
    'mutation { createTodo(input: {title: "from the fuzzer"}) { id } }',
    "subscription { todoChanged(since: -1) { rev } }",
    "{ __schema { types { name } } }",
    "query { me { id } } query { me { id } }",
    "{ " + "me { id } " * 50 + "}",
]
queries = st.sampled_from(QUERIES) | st.text(max_size=60)


def tagged(tag: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[str, Any]]:
    return st.tuples(st.just(tag), values)


frames = st.one_of(
    tagged("text", st.text(max_size=200)),
    tagged("bytes", st.binary(max_size=200)),
    tagged("json", json_values),
    tagged("message", st.fixed_dictionaries({"type": message_types}, optional={
        "token": json_values, "since": json_values, "id": json_values, "payload": json_values})),
    tagged("hello", st.tuples(st.sampled_from(["own", "other", "garbage", "missing"]),
                              st.none() | st.integers(-3, 2**70) | st.floats() | st.text(max_size=5)
                              | st.booleans())),
    tagged("init", st.sampled_from(["own", "other", "garbage", "missing", "header"])),
    tagged("subscribe", st.tuples(st.text(max_size=4) | st.integers(), queries,
                                  st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=3))),
    tagged("complete", st.text(max_size=4) | st.integers()),
    tagged("huge", st.tuples(st.integers(MAX_MESSAGE + 1, 3 * MAX_MESSAGE), st.booleans())),
    tagged("deep", st.integers(1, MAX_MESSAGE // 2)),
    tagged("flood", st.integers(30, 120)),
    tagged("raw", st.binary(min_size=1, max_size=64)),
)


@dataclass(frozen=True)
class Attack:
    endpoint: str  # "ws" or "graphql"
    authenticate: bool  # hello / connection_init with a good token first
    frames: list[tuple[str, Any]]


attacks = st.builds(Attack, st.sampled_from(["ws", "graphql"]), st.booleans(),
                    st.lists(frames, min_size=1, max_size=6))

# -- the observer ------------------------------------------------------------------------------


@dataclass
class Observer:
    """A device of ``user`` on both sockets, recording when each of its todos arrives."""

    user: User
    written: dict[str, float] = field(default_factory=dict)  # todo id → when the write answered
    seen: dict[str, dict[str, float]] = field(default_factory=lambda: {"ws": {}, "graphql": {}})
    closed: list[str] = field(default_factory=list)

    def lags(self) -> list[float]:
        return [self.seen[s][t] - w for t, w in self.written.items() for s in self.seen if t in self.seen[s]]

    async def watch_ws(self, instance: Instance, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with open_websocket_url(instance.ws_url) as ws:
                await hello(ws, self.user.token, None)
                task_status.started()
                while True:
                    message = json.loads(await ws.get_message())
                    if message["type"] == "ping":
                        await ws.send_message(frame({"type": "pong"}))
                    elif message["type"] == "change" and message.get("todo"):
                        self.seen["ws"].setdefault(message["todo"]["id"], time.monotonic())
        except ConnectionClosed as closed:
            self.closed.append(f"/ws closed: {closed.reason}")

    async def watch_graphql(self, instance: Instance, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with open_websocket_url(graphql_url(instance), subprotocols=[SUBPROTOCOL]) as ws:
                await ws.send_message(frame({"type": "connection_init", "payload": {"token": self.user.token}}))
                assert json.loads(await ws.get_message())["type"] == "connection_ack"
                await ws.send_message(frame({"id": "watch", "type": "subscribe", "payload": {
                    "query": "subscription { todoChanged { kind change { id } } }"}}))
                assert json.loads(await ws.get_message())["payload"]["data"]["todoChanged"]["kind"] == "HEAD"
                task_status.started()
                while True:
                    message = json.loads(await ws.get_message())
                    if message["type"] == "ping":
                        await ws.send_message(frame({"type": "pong"}))
                    elif message["type"] == "next":
                        change = message["payload"]["data"]["todoChanged"].get("change")
                        if change:
                            self.seen["graphql"].setdefault(change["id"], time.monotonic())
                    else:
                        self.closed.append(f"graphql subscription ended: {message}")
        except ConnectionClosed as closed:
            self.closed.append(f"graphql websocket closed: {closed.reason}")

    async def keep_writing(self, client: httpx.AsyncClient, instance: Instance) -> None:
        while True:
            r = await client.post(f"{instance.url}/api/todos", json={"title": "observed"}, headers=self.user.headers)
            assert r.status_code == 201, r.text
            self.written[r.json()["todo"]["id"]] = time.monotonic()
            await trio.sleep(WRITE_PERIOD)


def graphql_url(instance: Instance) -> str:
    return instance.ws_url.removesuffix("/ws") + "/graphql"


async def open_sockets(client: httpx.AsyncClient, instance: Instance) -> int:
    r = await client.get(f"{instance.url}/metrics")
    for line in r.text.splitlines():
        if line.startswith("nursery_websockets_open "):
            return int(float(line.split()[1]))
    raise AssertionError("no nursery_websockets_open in /metrics")


# -- one attack --------------------------------------------------------------------------------


@dataclass
class Target:
    instance: Instance
    own: User  # the observer's user, on another device: attacks share its hub and presence
    other: User


def encoded(kind: str, value: Any, target: Target, endpoint: str) -> list[str | bytes]:
    """The websocket messages one frame of an attack sends."""
    token = {"own": target.own.token, "other": target.other.token, "garbage": "x.y.z"}
    match kind:
        case "text":
            return [value]
        case "bytes":
            return [value]
        case "json" | "message":
            return [json.dumps(value)]
        case "hello":
            who, since = value
            body: dict[str, Any] = {"type": "hello", "since": since}
            if who != "missing":
                body["token"] = token[who]
            return [json.dumps(body)]
        case "init":
            payload: dict[str, Any] = {}
            if value == "header":
                payload = {"Authorization": f"Bearer {target.own.token}"}
            elif value != "missing":
                payload = {"token": token[value]}
            return [frame({"type": "connection_init", "payload": payload})]
        case "subscribe":
            op_id, query, variables = value
            return [json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables}})]
        case "complete":
            return [json.dumps({"id": value, "type": "complete"})]
        case "huge":
            size, binary = value
            return [b"\x00" * size if binary else '"' + "x" * size + '"']
        case "deep":
            return ["[" * value + "]" * value]
        case "flood":
            ping = frame({"type": "ping"})
            return [ping] * value
    raise AssertionError(kind)


async def attack_once(attack: Attack, target: Target) -> None:
    """Run one attack; raise AssertionError if the server answered it wrongly."""
    url = target.instance.ws_url if attack.endpoint == "ws" else graphql_url(target.instance)
    allowed = WS_CODES if attack.endpoint == "ws" else GRAPHQL_CODES
    with trio.fail_after(ATTACK_TIMEOUT):
        if any(kind == "raw" for kind, _ in attack.frames):
            # Random bytes may well form a client's close frame, whose code is echoed; bytes
            # that do not parse are answered with a close frame, never a dropped connection.
            raw_code = await raw_attack(target.instance, attack)
            assert raw_code not in {DROPPED, 1011, 1013, 4500}, (attack, raw_code)
            return
        subprotocols = [SUBPROTOCOL] if attack.endpoint == "graphql" else []
        async with open_websocket_url(url, subprotocols=subprotocols, message_queue_size=10_000,
                                      max_message_size=1 << 24, disconnect_timeout=1) as ws:
            if attack.authenticate:
                await authenticate(ws, attack.endpoint, target.own.token)
            code: int | None = None
            try:
                for kind, value in attack.frames:
                    for message in encoded(kind, value, target, attack.endpoint):
                        await ws.send_message(message)
            except ConnectionClosed as closed:
                code = closed.reason.code if closed.reason else None
            if code is None:  # a refusal comes at once; still open after this, it is served
                with trio.move_on_after(0.2):
                    code, _ = await closed_with(ws, timeout=15)
            if code is not None:
                assert code in allowed, f"closed with {code}: {ws.closed}"
            elif attack.authenticate:  # still open: it must still be served
                await still_answers(ws, attack.endpoint)


async def authenticate(ws: WebSocketConnection, endpoint: str, token: str) -> None:
    if endpoint == "ws":
        await hello(ws, token, None)
    else:
        await ws.send_message(frame({"type": "connection_init", "payload": {"token": token}}))
        assert json.loads(await ws.get_message())["type"] == "connection_ack"


async def still_answers(ws: WebSocketConnection, endpoint: str) -> None:
    await ws.send_message(frame({"type": "ping"}))
    with trio.fail_after(5):
        try:
            while json.loads(await ws.get_message()).get("type") != "pong":
                pass
        except ConnectionClosed as closed:  # closed meanwhile, by a protocol rule
            allowed = WS_CODES if endpoint == "ws" else GRAPHQL_CODES
            assert closed.reason is not None and closed.reason.code in allowed, closed.reason


# -- raw frames: what no websocket library sends -------------------------------------------------

def ws_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0,
             length: int | None = None) -> bytes:
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload) if length is None else length
    masked = 0x80 if mask else 0
    if n < 126:
        header = struct.pack("!BB", first, masked | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, masked | 126, n)
    else:
        header = struct.pack("!BBQ", first, masked | 127, n)
    if not mask:
        return header + payload
    key = b"\x01\x02\x03\x04"
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


# A frame that does not parse is answered with its close code (RFC 6455 7.1.7: the close frame
# goes first), never by dropping the connection (1006): one code per case, the one wsproto and
# the Autobahn TestSuite expect (docs/protocol.md, "Websocket frames").
RAW_CASES: list[tuple[str, bytes, set[int | None]]] = [
    ("text frame that is not UTF-8", ws_frame(0x1, b'{"type": "\xff\xfe"}'), {1007}),
    ("unmasked client frame", ws_frame(0x1, b'{"type":"ping"}', mask=False), {1002}),
    ("reserved opcode", ws_frame(0x3, b"x"), {1002}),
    ("reserved bits set", ws_frame(0x1, b'{"type":"ping"}', rsv=0b100), {1002}),
    ("control frame over 125 bytes", ws_frame(0x9, b"p" * 200), {1002}),
    ("fragmented control frame", ws_frame(0x9, b"p", fin=False), {1002}),
    ("continuation without a start", ws_frame(0x0, b"x"), {1002}),
    # Announced, never sent: refused from the header, nothing is allocated.
    ("length of 2^63 - 1 announced", ws_frame(0x2, b"", length=(1 << 63) - 1), {1009}),
    ("a 64-bit length with its top bit set", bytes((0x82, 0xFF, 0x80)) + bytes(7) + b"mask", {1002}),
    ("a length not in its shortest form", bytes((0x81, 0xFE, 0, 2)) + b"\0\0\0\0{}", {1002}),
    ("frame over the limit", ws_frame(0x1, b"x" * (MAX_MESSAGE + 1)), {1009}),
    ("fragments adding up past the limit",
     ws_frame(0x1, b"x" * (MAX_MESSAGE // 2 + 1), fin=False) + ws_frame(0x0, b"x" * (MAX_MESSAGE // 2 + 1)), {1009}),
    ("40,000 empty fragments", ws_frame(0x1, b"j", fin=False) + ws_frame(0x0, b"", fin=False) * 40_000,
     {1009}),
    ("invalid UTF-8 in a fragment, the message unfinished",
     ws_frame(0x1, b'{"type": ', fin=False) + ws_frame(0x0, b"\xff", fin=False), {1007}),
    ("close frame with a bad code", ws_frame(0x8, struct.pack("!H", 999)), {1002}),
    ("close frame with a 1-byte body", ws_frame(0x8, b"\x03"), {1002}),
    ("close frame whose reason is not UTF-8", ws_frame(0x8, struct.pack("!H", 1000) + b"\xff"), {1007}),
]


async def raw_socket(instance: Instance, path: str, subprotocol: str | None) -> trio.SocketStream:
    host, port = instance.url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    assert await handshake(stream, host, path, subprotocol) == b""  # the server speaks second
    return stream


DROPPED = 1006  # what a client library reports for a connection ended without a close frame


async def raw_close_code(stream: trio.SocketStream, timeout: float = 3) -> int | None:
    """Read server frames until a close frame (its code), the end of the stream (1006, as a
    client library reports it) or ``timeout`` (None: the server is still waiting)."""
    data = b""
    with trio.move_on_after(timeout):
        while True:
            while len(data) >= 2:
                n, offset = data[1] & 0x7F, 2
                if n == 126:
                    n, offset = struct.unpack("!H", data[2:4])[0], 4
                elif n == 127:
                    n, offset = struct.unpack("!Q", data[2:10])[0], 10
                if len(data) < offset + n:
                    break
                opcode, payload = data[0] & 0x0F, data[offset:offset + n]
                data = data[offset + n:]
                if opcode == 0x8:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # reset
                return DROPPED
            if not chunk:
                return DROPPED
            data += chunk
    return None


async def raw_attack(instance: Instance, attack: Attack) -> int | None:
    path = "/ws" if attack.endpoint == "ws" else "/graphql"
    stream = await raw_socket(instance, path, SUBPROTOCOL if attack.endpoint == "graphql" else None)
    try:
        for kind, value in attack.frames:
            if kind == "raw":
                data = value
            else:
                data = b"".join(ws_frame(0x2 if isinstance(m, bytes) else 0x1, m if isinstance(m, bytes) else m.encode())
                                for m in encoded(kind, value, Target(instance, _NOBODY, _NOBODY), attack.endpoint))
            try:
                await stream.send_all(data)
            except trio.BrokenResourceError:
                break
        return await raw_close_code(stream, timeout=0.5)
    finally:
        await stream.aclose()


_NOBODY = User("", "", "not-a-token", "", "")

# -- the tests -------------------------------------------------------------------------------------


async def test_raw_frames_are_refused_with_their_close_codes(database_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url)
            user = await register(client, instance.url)
            problems = []
            for endpoint, path, subprotocol in (("ws", "/ws", None), ("graphql", "/graphql", SUBPROTOCOL)):
                for name, data, expected in RAW_CASES:
                    stream = await raw_socket(instance, path, subprotocol)
                    if endpoint == "ws":
                        hello_frame = json.dumps({"type": "hello", "token": user.token, "since": None}).encode()
                    else:
                        hello_frame = frame({"type": "connection_init", "payload": {"token": user.token}}).encode()
                    await stream.send_all(ws_frame(0x1, hello_frame) + data)
                    code = await raw_close_code(stream)
                    await stream.aclose()
                    if code not in expected:
                        problems.append(f"{endpoint} {name}: closed {code}, expected {expected}")
            assert not problems, "\n".join(problems)
            assert (await client.get(f"{instance.url}/readyz")).status_code == 200
            nursery.cancel_scope.cancel()


WS_TABLE: list[tuple[str, list[str | bytes], int]] = [
    ("binary frame before hello", [b'{"type":"hello"}'], 1008),
    ("not JSON", ["hello"], 1008),
    ("JSON but not an object", ["[1, 2]"], 1008),
    ("nested deeper than the parser goes", ["[" * 30_000 + "]" * 30_000], 1008),
    ("unknown type first", ['{"type": "nope"}'], 1008),
    ("ping before hello", ['{"type": "ping"}'], 4001),
    ("hello without a token", ['{"type": "hello", "since": null}'], 4001),
    ("hello with a number as token", ['{"type": "hello", "token": 5, "since": null}'], 4001),
    ("hello with a text since", ['{"type": "hello", "token": "TOKEN", "since": "0"}'], 1008),
    ("hello with a negative since", ['{"type": "hello", "token": "TOKEN", "since": -1}'], 1008),
    ("hello with a float since", ['{"type": "hello", "token": "TOKEN", "since": 1.0}'], 1008),
    ("hello with a boolean since", ['{"type": "hello", "token": "TOKEN", "since": true}'], 1008),
    ("frame over ws_max_message_bytes", ['"' + "x" * (MAX_MESSAGE + 1) + '"'], 1009),
    ("binary frame over ws_max_message_bytes", [b"x" * (MAX_MESSAGE + 1)], 1009),
    ("binary over the limit, then text", [b"x" * (MAX_MESSAGE + 1), "hello"], 1009),
    ("text over the limit, then binary", ["x" * (MAX_MESSAGE + 1), b"hello"], 1009),
    ("a second hello", ["HELLO", "HELLO"], 1008),
    ("binary frame after hello", ["HELLO", b"\x00\x01"], 1008),
    ("unknown type after hello", ["HELLO", '{"type": "change", "rev": 1}'], 1008),
    ("deep JSON after hello", ["HELLO", "[" * 30_000 + "]" * 30_000], 1008),
    ("a flood after hello", ["HELLO", *(['{"type": "ping"}'] * 100)], 4029),
]


async def test_bad_ws_frames_close_with_the_documented_codes(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url)
            user = await register(client, instance.url)
            hello_text = json.dumps({"type": "hello", "token": user.token, "since": None})
            problems = []
            for name, messages, expected in WS_TABLE:
                async with open_websocket_url(instance.ws_url) as ws:
                    code = None
                    try:
                        for message in messages:
                            if message == "HELLO":
                                await ws.send_message(hello_text)
                            else:
                                await ws.send_message(message.replace("TOKEN", user.token) if isinstance(message, str) else message)
                    except ConnectionClosed as closed:
                        code = closed.reason.code if closed.reason else None
                    if code is None:
                        code, _ = await closed_with(ws)
                    if code != expected:
                        problems.append(f"{name}: closed {code}, expected {expected}")
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert not problems and not errors, "\n".join(problems + errors)
            assert (await client.get(f"{instance.url}/readyz")).status_code == 200
            nursery.cancel_scope.cancel()


async def test_an_oversized_message_then_one_of_the_other_kind_does_not_stop_the_instance(database_url: str) -> None:
    """Two frames used to take a whole instance down (see nursery.server._RefusingBuffer)."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url)
            for url, subprotocols in ((instance.ws_url, []), (graphql_url(instance), [SUBPROTOCOL])):
                for first, then in ((b"x" * (MAX_MESSAGE + 1), "x"), ("x" * (MAX_MESSAGE + 1), b"x")):
                    async with open_websocket_url(url, subprotocols=subprotocols) as ws:
                        try:
                            await ws.send_message(first)
                            await ws.send_message(then)
                        except ConnectionClosed:
                            pass
                        code, _ = await closed_with(ws)
                        assert code == 1009
                    r = await client.get(f"{instance.url}/readyz")
                    assert r.status_code == 200
            nursery.cancel_scope.cancel()


async def test_fuzzing_both_websockets_leaves_the_server_healthy_and_the_observer_served(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    with trio.fail_after(180):
        async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=10) as client:
            # A quick heartbeat: sockets the attacks leave idle end soon.
            instance = await start_instance(nursery, database_url, ws_hello_timeout=2.0,
                                            ws_ping_interval=1.0, ws_ping_timeout=1.0)
            observer_user = await register(client, instance.url, "observer")
            own_device = await login(client, instance.url, observer_user, "fuzzed device")
            other = await register(client, instance.url, "another user")
            observer = Observer(observer_user)
            async with trio.open_nursery() as watching:
                await watching.start(observer.watch_ws, instance)
                await watching.start(observer.watch_graphql, instance)
                sockets_before = await open_sockets(client, instance)
                watching.start_soon(observer.keep_writing, client, instance)
                target = Target(instance, own_device, other)
                examples: list[Attack] = []

                @settings(max_examples=EXAMPLES, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
                @given(attack=attacks)
                def fuzz(attack: Attack) -> None:
                    examples.append(attack)
                    try:
                        trio.from_thread.run(attack_once, attack, target)
                    except BaseException:  # shown even if shrinking outlasts the test's deadline
                        print(f"failing attack: {attack!r:.3000}", file=sys.stderr)
                        raise

                started = trio.current_time()
                await trio.to_thread.run_sync(fuzz)
                elapsed = trio.current_time() - started
                # The observer's last writes arrive too, and nothing was dropped on the way.
                await trio.sleep(3 * WRITE_PERIOD)
                watching.cancel_scope.cancel()
            written = dict(observer.written)
            with trio.fail_after(MAX_LAG + 1):
                while any(t not in observer.seen[s] for t in written for s in observer.seen):
                    await trio.sleep(0.05)
            lags = sorted(observer.lags())
            frames_sent = sum(len(a.frames) for a in examples)
            print(f"websocket fuzz: {len(examples)} examples ({frames_sent} frames;"
                  f" {sum(a.endpoint == 'ws' for a in examples)} on /ws) in {elapsed:.0f} s;"
                  f" observer got {len(written)} todos on 2 sockets, lag median"
                  f" {lags[len(lags) // 2] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms")
            assert not observer.closed, observer.closed
            assert lags[-1] < MAX_LAG, lags[-10:]
            assert (await client.get(f"{instance.url}/readyz")).status_code == 200
            assert sockets_before >= 2
            with trio.fail_after(5):  # every attacking connection is gone, the watchers too
                while await open_sockets(client, instance) > 0:
                    await trio.sleep(0.1)
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert not errors, caplog.text[-10_000:]
            nursery.cancel_scope.cancel()


# -- budgets and caps at the product's endpoints ---------------------------------------------------

async def test_20000_pings_before_hello_get_a_burst_of_pongs_then_1008(database_url: str) -> None:
    """Every frame counts against ws_frame_rate, pings included: 20,000 pings sent before any
    hello got 20,000 pongs; now at most the burst, then 1008, while /readyz keeps answering."""
    burst = Settings().ws_frame_rate.count
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url)
            stream = await raw_socket(instance, "/ws", None)
            started = time.perf_counter()
            await stream.send_all(ws_frame(0x9, b"x") * 20_000)
            data = b""
            with trio.fail_after(5):
                while True:
                    chunk = await stream.receive_some(1 << 20)
                    if not chunk:
                        break
                    data += chunk
            elapsed = time.perf_counter() - started
            await stream.aclose()
            pong = bytes((0x8A, 1)) + b"x"
            pongs = data.count(pong)
            close = data[pongs * len(pong):]
            assert close[:1] == b"\x88" and struct.unpack("!H", close[2:4])[0] == 1008, close[:40]
            assert pongs <= burst * 1.1, pongs
            assert elapsed < 2, elapsed
            assert (await client.get(f"{instance.url}/readyz")).status_code == 200
            nursery.cancel_scope.cancel()


async def test_a_user_gets_at_most_ws_max_sockets_per_user_sockets(database_url: str) -> None:
    """Centrifugo's client_user_connection_limit: the third socket of a user limited to two
    is closed with 4420, on /ws and GraphQL alike (they share the count); another user, or the
    same one after a socket closed, is served."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url, ws_max_sockets_per_user=2)
            user = await register(client, instance.url)
            other = await register(client, instance.url, "another")
            async with open_websocket_url(instance.ws_url) as first, \
                    open_websocket_url(graphql_url(instance), subprotocols=[SUBPROTOCOL]) as second:
                await hello(first, user.token, None)
                await authenticate(second, "graphql", user.token)
                for url, endpoint in ((instance.ws_url, "ws"), (graphql_url(instance), "graphql")):
                    subprotocols = [SUBPROTOCOL] if endpoint == "graphql" else []
                    async with open_websocket_url(url, subprotocols=subprotocols) as third:
                        if endpoint == "ws":
                            await third.send_message(json.dumps(
                                {"type": "hello", "token": user.token, "since": None}))
                        else:
                            await third.send_message(frame(
                                {"type": "connection_init", "payload": {"token": user.token}}))
                        code, _ = await closed_with(third)
                        assert code == 4420, (endpoint, code)
                        assert third.closed is not None and "websockets" in (third.closed.reason or "")
                async with open_websocket_url(instance.ws_url) as others:
                    await hello(others, other.token, None)
                await first.aclose()
                with trio.fail_after(5):  # the hub forgets the closed socket
                    while True:
                        async with open_websocket_url(instance.ws_url) as again:
                            await again.send_message(json.dumps(
                                {"type": "hello", "token": user.token, "since": None}))
                            try:
                                if json.loads(await again.get_message())["type"] == "welcome":
                                    break
                            except ConnectionClosed:
                                pass  # 4420 still: the first socket's end not yet seen
                        await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
