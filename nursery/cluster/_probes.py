"""Probes of the cluster's processes: HTTP with httpx, Redis with our own client, and
PostgreSQL with one startup message.

Each probe answers a short description when the process is healthy, None otherwise (no
answer within ``PROBE_TIMEOUT``, refused, or not the expected answer); none raises.
"""

from __future__ import annotations

import json
import ssl
import struct
from collections.abc import Callable
from typing import Any

import httpx
import trio

from nursery.cluster import _redis_cluster as redis_cluster
from nursery.redis import resp

PROBE_TIMEOUT = 2.0
MAX_RESPONSE = 1 << 20


# The SSL context of an HTTPS proxy (``--tls``), looked up at each probe: None before the
# proxy's CA exists (not ready yet).
TLS = Callable[[], ssl.SSLContext | None]


async def http_get(
    host: str, port: int, path: str, timeout: float = PROBE_TIMEOUT, *, tls: TLS | None = None
) -> tuple[int, bytes] | None:
    """(status, body) of ``GET path`` (over TLS with ``tls``), or None when nothing (valid)
    answers in time or the body is over ``MAX_RESPONSE``."""
    context = tls() if tls is not None else None
    if tls is not None and context is None:
        return None
    address = f"[{host}]" if ":" in host else host
    url = f"{'https' if context is not None else 'http'}://{address}:{port}{path}"
    try:
        with trio.fail_after(timeout):
            # trust_env=False: a proxy from the environment must not stand between us and ours.
            async with httpx.AsyncClient(timeout=timeout, trust_env=False, verify=context or True,
                                         headers={"user-agent": "nursery-cluster"}) as client, \
                    client.stream("GET", url) as response:
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE:
                        return None
    except (httpx.HTTPError, OSError, trio.TooSlowError):
        return None
    return response.status_code, body


def json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def readyz_probe(host: str, port: int, *, tls: TLS | None = None) -> Callable[[], Any]:
    """An instance's /readyz, or Caddy's (which answers 200 while any instance is ready)."""

    async def probe() -> str | None:
        answer = await http_get(host, port, "/readyz", tls=tls)
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


async def until_proxy_reaches(host: str, port: int, instance: str, *, tls: TLS | None = None) -> None:
    """Until a GET /readyz through Caddy is answered by ``instance`` (round robin reaches
    every healthy upstream in turn, so a few tries suffice once Caddy counts it healthy)."""
    while True:
        answer = await http_get(host, port, "/readyz", tls=tls)
        if answer is not None and answer[0] == 200 and json_object(answer[1]).get("instance") == instance:
            return
        await trio.sleep(0.05)
