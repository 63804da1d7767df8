"""A load-generator process of ``fanout.py``, driven over stdin/stdout (one JSON object a line).

    python bench/fanout_worker.py receiver   # holds devices' websockets, records latencies
    python bench/fanout_worker.py writer     # the open-loop POSTs of its share of each level

The first line in is the worker's setup; it answers once ready, then one answer per command
(``count``, ``collect``, ``level``) until ``stop`` or the end of stdin.

Latency without shared state: a write's title is ``L<level> <monotonic_ns> <index>``, the
timestamp taken just before the request bytes are written to the socket. ``time.monotonic``
is the system-wide CLOCK_MONOTONIC on Linux, so a receiver in another process subtracts it
from its own clock when the change arrives.
"""

from __future__ import annotations

import json
import random
import resource
import sys
import time
from collections import Counter
from typing import Any

import trio
import wire
import wire_ws


class JsonLines:
    """JSON objects, one a line, over a pair of Trio byte streams."""

    def __init__(self, receive: trio.abc.ReceiveStream, send: trio.abc.SendStream) -> None:
        self._receive, self._send = receive, send
        self._buffer = bytearray()

    async def read(self) -> Any:
        """The next object, or None at the end of the stream."""
        while (end := self._buffer.find(b"\n")) < 0:
            data = await self._receive.receive_some(1 << 20)
            if not data:
                return None
            self._buffer += data
        line = bytes(self._buffer[:end])
        del self._buffer[:end + 1]
        return json.loads(line)

    async def write(self, value: Any) -> None:
        await self._send.send_all(json.dumps(value, separators=(",", ":")).encode() + b"\n")


# ---------------------------------------------------------------------------------------
# receiver


class Receiver:
    """Devices: ``hello``, ``welcome``, then every change's latency, by load level. Once
    connected, all the devices are read by one task (``wire_ws.WebSocketGroup``)."""

    def __init__(self, setup: dict[str, Any]) -> None:
        self.ws_urls: list[str] = setup["ws_urls"]
        self.devices: list[tuple[int, str]] = setup["devices"]  # (ws url index, token)
        self.parallel: int = setup.get("parallel", 64)
        self.group = wire_ws.WebSocketGroup()
        self.latencies: dict[int, list[int]] = {}  # level → ns, for levels not collected yet
        self.collected: set[int] = set()
        self.failed = 0

    async def connect(self, url: str, token: str, handshakes: trio.Semaphore) -> None:
        async with handshakes:
            ws = None
            try:
                ws = await wire_ws.connect_websocket(url)
                await ws.send_text(json.dumps({"type": "hello", "token": token, "since": None}))
                with trio.fail_after(wire.TIMEOUT):
                    welcome = await ws.receive()
                if '"welcome"' not in str(welcome):
                    raise wire.ProtocolError(f"expected a welcome, got {welcome[:200]!r}")
            except wire.NETWORK_ERRORS as error:
                if ws is not None:
                    ws.close()
                self.failed += 1
                print(f"device did not connect: {error!r}", file=sys.stderr)
                return
            self.group.add(ws)

    def on_message(self, ws: wire_ws.WebSocket, message: str | bytes) -> None:
        now = time.monotonic_ns()
        if type(message) is not str:
            return
        at = message.find('"title":"L')
        if at >= 0:  # a change of one of our writes: "L<level> <sent ns> <index>"
            at += 10
            level, sent, _ = message[at:message.index('"', at)].split(" ", 2)
            level = int(level)
            if level not in self.collected:
                if (values := self.latencies.get(level)) is None:
                    values = self.latencies[level] = []
                values.append(now - int(sent))
        elif '"ping"' in message and json.loads(message).get("type") == "ping":
            ws.send_text_nowait('{"type":"pong"}')

    def on_close(self, ws: wire_ws.WebSocket, error: Exception) -> None:
        print(f"device disconnected: {error!r}", file=sys.stderr)

    async def run(self, lines: JsonLines) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.group.serve, self.on_message, self.on_close)
            handshakes = trio.Semaphore(self.parallel)
            async with trio.open_nursery() as connecting:
                for url_index, token in self.devices:
                    connecting.start_soon(self.connect, self.ws_urls[url_index], token, handshakes)
            await lines.write({"opened": len(self.group) + self.group.closed, "failed": self.failed})
            while (command := await lines.read()) is not None and command["cmd"] != "stop":
                level = command.get("level")
                if command["cmd"] == "count":
                    await lines.write({"delivered": len(self.latencies.get(level, ())), "open": len(self.group)})
                elif command["cmd"] == "collect":
                    self.collected.add(level)
                    values = self.latencies.pop(level, [])
                    await lines.write({"latencies_ms": [round(ns / 1e6, 3) for ns in values]})
            nursery.cancel_scope.cancel()
        self.group.close()


# ---------------------------------------------------------------------------------------
# writer


class Writer:
    """This process's share of each level's writes: write i is due at start + i / rate, for
    i ≡ index (mod of); at most ``in_flight`` at once (beyond that, writes fall behind)."""

    def __init__(self, setup: dict[str, Any]) -> None:
        self.index: int = setup["index"]
        self.of: int = setup["of"]
        self.in_flight: int = setup["in_flight"]
        self.pools = [wire.HTTPPool(url, max_connections=setup["max_connections"]) for url in setup["urls"]]
        self.heads = [b"POST /api/todos HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                      % pool.host_header for pool in self.pools]
        self.auth = [b"Authorization: Bearer %s\r\n" % token.encode() for token in setup["tokens"]]

    async def level(self, level: int, rate: float, writes: int, start_ns: int) -> dict[str, Any]:
        mine = iter(range(self.index, writes, self.of))  # shared by the lanes, taken in order
        done = 0
        errors: Counter[str] = Counter()
        heads, auth, pools = self.heads, self.auth, self.pools
        ns_per_write = 1e9 / rate
        monotonic_ns = time.monotonic_ns

        async def lane() -> None:
            nonlocal done
            for i in mine:
                delay = (start_ns + i * ns_per_write - monotonic_ns()) / 1e9
                if delay > 0:
                    await trio.sleep(delay)
                target = random.randrange(len(pools))
                prefix = heads[target] + random.choice(auth)

                def build(prefix: bytes = prefix, i: int = i) -> bytes:
                    body = b'{"title":"L%d %d %d"}' % (level, monotonic_ns(), i)
                    return prefix + b"Content-Length: %d\r\n\r\n" % len(body) + body

                try:
                    status, _ = await pools[target].request(build)
                    if status != 201:
                        errors[str(status)] += 1
                except wire.NETWORK_ERRORS as error:
                    errors[type(error).__name__] += 1
                done += 1

        async with trio.open_nursery() as nursery:
            for _ in range(min(self.in_flight, len(range(self.index, writes, self.of)))):
                nursery.start_soon(lane)
        return {"writes": done, "errors": dict(errors), "finished_ns": monotonic_ns(),
                "connections_opened": sum(pool.opened for pool in pools)}

    async def run(self, lines: JsonLines) -> None:
        await lines.write({"ready": True})
        while (command := await lines.read()) is not None and command["cmd"] != "stop":
            if command["cmd"] == "level":
                await lines.write(await self.level(command["level"], command["rate"], command["writes"],
                                                   command["start_ns"]))
        for pool in self.pools:
            pool.close()


async def main(role: str) -> None:
    lines = JsonLines(trio.lowlevel.FdStream(0), trio.lowlevel.FdStream(1))
    setup = await lines.read()
    if setup is None:
        return
    worker = Receiver(setup) if role == "receiver" else Writer(setup)
    await worker.run(lines)


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if sys.argv[1:] not in (["receiver"], ["writer"]):
        sys.exit(__doc__)
    trio.run(main, sys.argv[1])
