"""A stand-in for the instances that only answers and fans out: to measure the load
generator's own CPU at rates the real servers cannot reach (it is not a server to measure).

    .venv/bin/python bench/null_server.py --ports 4101,4102,4103 &
    .venv/bin/python bench/fanout.py --urls http://127.0.0.1:4101,http://127.0.0.1:4102,http://127.0.0.1:4103 \\
        --register --users 1000 --devices 3 --rates 250,500,1000 --seconds 10

One process serves every port with shared state, so a write on one port reaches devices on
the others. ``/api/auth/register`` and ``/api/auth/login`` hand out tokens
``<user>.<device>``; ``POST /api/todos`` answers 201 and sends every device of the user a
``change`` frame; ``/ws`` does hello → welcome. No checks, no persistence. asyncio
protocols, so that the stand-in itself stays cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class State:
    def __init__(self) -> None:
        self.users: dict[str, int] = {}  # email → user
        self.devices: dict[str, list[Connection]] = {}  # user → its open sockets
        self.rev = 0


def text_frame(text: str) -> bytes:
    data = text.encode()
    n = len(data)
    head = struct.pack("!BB", 0x81, n) if n < 126 else struct.pack("!BBH", 0x81, 126, n)
    return head + data


class Connection(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.buffer = bytearray()
        self.websocket = False
        self.user: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.user is not None:
            self.state.devices[self.user].remove(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.buffer:
            if not (self.ws_frame() if self.websocket else self.http_request()):
                return

    def http_request(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self.buffer[:end]).decode().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        if len(self.buffer) < end + 4 + length:
            return False
        body = bytes(self.buffer[end + 4:end + 4 + length])
        del self.buffer[:end + 4 + length]
        method, path, _ = lines[0].split(" ", 2)
        if path == "/ws":
            accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest())
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            self.websocket = True
            return True
        state = self.state
        if path == "/api/todos" and method == "POST":
            user = headers["authorization"].removeprefix("Bearer ").split(".")[0]
            state.rev += 1
            todo = {"id": str(state.rev), "title": json.loads(body)["title"], "done": False}
            frame = text_frame(json.dumps({"type": "change", "op": "upsert", "rev": state.rev, "todo": todo},
                                          separators=(",", ":")))
            for device in state.devices.get(user, ()):
                device.transport.write(frame)
            self.respond(201, todo)
        elif path in ("/api/auth/register", "/api/auth/login") and method == "POST":
            request = json.loads(body)
            user = state.users.setdefault(request["email"], len(state.users))
            self.respond(201, {"token": f"{user}.{request['device']}"})
        elif path == "/readyz":
            self.respond(200, {"ok": True})
        else:
            self.respond(404, {"error": "not found"})
        return True

    def respond(self, status: int, body: object) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.transport.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                             % (status, len(data)) + data)

    def ws_frame(self) -> bool:
        buf = self.buffer
        if len(buf) < 2:
            return False
        n, at = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return False
            n, at = struct.unpack_from("!H", buf, 2)[0], 4
        if len(buf) < at + 4 + n:
            return False
        key, payload = bytes(buf[at:at + 4]), bytes(buf[at + 4:at + 4 + n])
        opcode = buf[0] & 0x0F
        del buf[:at + 4 + n]
        text = bytes(b ^ key[i % 4] for i, b in enumerate(payload)).decode()
        if opcode == 0x8:
            self.transport.close()
        elif opcode == 0x1:
            message = json.loads(text)
            if message["type"] == "hello":
                self.user = message["token"].split(".")[0]
                self.state.devices.setdefault(self.user, []).append(self)
                self.transport.write(text_frame(json.dumps({"type": "welcome", "rev": self.state.rev})))
        return True


async def main(ports: list[int]) -> None:
    state = State()
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(lambda: Connection(state), "127.0.0.1", port, backlog=4096)
               for port in ports]
    print("serving on", ", ".join(f"http://127.0.0.1:{port}" for port in ports), flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ports", default="4101,4102,4103")
    asyncio.run(main([int(p) for p in parser.parse_args().ports.split(",")]))
