"""Probes of the cluster's processes, with no HTTP library (the supervisor needs none).

Each probe answers a short description when the process is healthy, None otherwise (no
answer within ``PROBE_TIMEOUT``, refused, or not the expected answer); none raises.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import trio

from nursery.cluster import _redis_cluster as redis_cluster
from nursery.pubsub import resp

PROBE_TIMEOUT = 2.0
MAX_RESPONSE = 1 << 20


async def http_get(
    host: str, port: int, path: str, timeout: float = PROBE_TIMEOUT
) -> tuple[int, bytes] | None:
    """(status, body) of ``GET path``, or None when nothing (valid) answers in time. Reads
    by Content-Length or chunks, not to the end of the stream: a server may keep the socket
    open after ``Connection: close``."""
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
               f"User-Agent: nursery-cluster\r\n\r\n").encode()
    data = b""
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(request)
                while not _response_complete(data) and len(data) < MAX_RESPONSE:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
    except (OSError, trio.TooSlowError, trio.BrokenResourceError, ValueError, IndexError):
        return None
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return status, body


def _response_complete(data: bytes) -> bool:
    head, found, body = data.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.lower().split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == b"content-length":
            return len(body) >= int(value.strip() or b"0")
        if name.strip() == b"transfer-encoding" and b"chunked" in value:
            return body.endswith(b"0\r\n\r\n")
    return False  # no length: until the server closes


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out, body = out + rest[:size], rest[size + 2:]
    return out


def json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def readyz_probe(host: str, port: int) -> Callable[[], Any]:
    """An instance's /readyz, or Caddy's (which answers 200 while any instance is ready)."""

    async def probe() -> str | None:
        answer = await http_get(host, port, "/readyz")
        return "/readyz 200" if answer is not None and answer[0] == 200 else None

    return probe


def redis_probe_of(host: str, port: int) -> Callable[[], Any]:
    return lambda: redis_probe(host, port)


async def redis_probe(host: str, port: int) -> str | None:
    try:
        with trio.fail_after(PROBE_TIMEOUT):
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(b"PING\r\n")
                reply = await stream.receive_some(64)
    except (OSError, trio.TooSlowError, trio.BrokenResourceError):
        return None
    return "PONG" if reply.startswith(b"+PONG") else None


def redis_cluster_probe_of(host: str, port: int, size: int = redis_cluster.NODES) -> Callable[[], Any]:
    return lambda: redis_cluster_probe(host, port, size)


async def redis_cluster_probe(host: str, port: int, size: int = redis_cluster.NODES) -> str | None:
    """"cluster ok, slots 0-5460" when the node reports the whole cluster healthy (state ok,
    every slot served, all ``size`` nodes known: ``redis_cluster.ready``), with the slots it
    serves; a node that answers PING but is not (yet) part of a healthy cluster is not ready. In a
    cluster with replicas (``--ha``) its role too: "cluster ok, master, 1 replica, slots
    0-5460", "cluster ok, replica, in sync"; a replica not in sync with its master is not
    ready (so startup waits until every master has its replica attached)."""
    address = f"[{host}]" if ":" in host else host
    try:
        async with resp.Connection.open(f"redis://{address}:{port}", timeout=PROBE_TIMEOUT) as connection:
            info, nodes, role = await connection.pipeline(
                [("CLUSTER", "INFO"), ("CLUSTER", "NODES"), ("ROLE",)])
    except (resp.RedisError, OSError, trio.TooSlowError):
        return None
    if not isinstance(info, bytes) or not isinstance(nodes, bytes) or not isinstance(role, list):
        return None  # refused: not a cluster node
    if not redis_cluster.ready(redis_cluster.parse_info(info.decode()), size):
        return None
    if size == redis_cluster.NODES:  # no replicas
        return f"cluster ok, slots {redis_cluster.own_slots(nodes.decode()) or 'none'}"
    described = redis_cluster.describe_role(role)
    if described is None:
        return None
    slots = redis_cluster.own_slots(nodes.decode())
    return f"cluster ok, {described}" + (f", slots {slots}" if slots else "")


def postgres_probe_of(host: str, port: int) -> Callable[[], Any]:
    return lambda: postgres_probe(host, port)


# A protocol 3.0 StartupMessage (user nursery, database postgres) and a Terminate.
_PG_PARAMETERS = b"user\0nursery\0database\0postgres\0\0"
_PG_STARTUP = struct.pack("!ii", 8 + len(_PG_PARAMETERS), 196608) + _PG_PARAMETERS
_PG_TERMINATE = b"X\0\0\0\4"


async def postgres_probe(host: str, port: int) -> str | None:
    """"accepts" when the server answers a startup message with an authentication request
    ('R'); a server that listens but is still starting up (recovery after a crash) or shutting
    down answers an error ('E') instead, which is not ready."""
    try:
        with trio.fail_after(PROBE_TIMEOUT):
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(_PG_STARTUP)
                reply = await stream.receive_some(1)
                if reply == b"R":
                    await stream.send_all(_PG_TERMINATE)
    except (OSError, trio.TooSlowError, trio.BrokenResourceError):
        return None
    return "accepts" if reply == b"R" else None


async def until_proxy_reaches(host: str, port: int, instance: str) -> None:
    """Until a GET /readyz through Caddy is answered by ``instance`` (round robin reaches
    every healthy upstream in turn, so a few tries suffice once Caddy counts it healthy)."""
    while True:
        answer = await http_get(host, port, "/readyz")
        if answer is not None and answer[0] == 200 and json_object(answer[1]).get("instance") == instance:
            return
        await trio.sleep(0.05)
