"""What a client can cost the edge over HTTP is bounded (the budgets of ``HttpLimits`` and
``EdgeLimits``), on the real listener: a request trickled a byte at a time is cut at its
deadline, not kept alive by every read; pipelined requests do not hold the instance; one
address cannot take every connection; running out of file descriptors is said rarely.
"""

from __future__ import annotations

import logging
import resource
import socket

import pytest
import trio
import trio.testing

from nursery.edge import EdgeLimits, listener
from nursery.edge.http import HttpLimits
from tests.edge.serving import Served, exchange, read_until, split_responses, start_edge, statuses

HEADER_TIMEOUT = 0.5
LIMITS = EdgeLimits(http=HttpLimits(header_timeout=HEADER_TIMEOUT, body_min_rate=200,
                                    request_timeout=3, idle_timeout=0.6))


async def trickle(stream: trio.SocketStream, data: bytes, interval: float) -> None:
    """Send ``data`` a byte every ``interval`` seconds, until it is sent or the server closes."""
    for i in range(len(data)):
        try:
            await stream.send_all(data[i:i + 1])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        await trio.sleep(interval)


async def answer_while_trickling(served: Served, opening: bytes, trickled: bytes,
                                 interval: float) -> tuple[bytes, float]:
    """What the server answers to ``opening`` sent at once, then ``trickled`` a byte at a time;
    and how long after the first byte it closed."""
    stream = await served.connect()
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await stream.send_all(opening)
        nursery.start_soon(trickle, stream, trickled, interval)
        answer = await read_until(stream, timeout=10)
        nursery.cancel_scope.cancel()
    await stream.aclose()
    return answer, trio.current_time() - start


@pytest.fixture
async def served(nursery: trio.Nursery) -> Served:
    return await start_edge(nursery, LIMITS)


async def test_a_head_trickled_a_byte_at_a_time_is_408_at_its_deadline(served: Served) -> None:
    with trio.fail_after(10):
        answer, took = await answer_while_trickling(
            served, b"G", b"ET /headers HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000, 0.05)
    assert statuses(answer) == [408]
    assert HEADER_TIMEOUT * 0.9 <= took < HEADER_TIMEOUT + 1


async def test_a_body_slower_than_the_minimum_rate_is_408(served: Served) -> None:
    # 20 bytes/s against a minimum of 200: cut soon after the head start, not at the end.
    with trio.fail_after(10):
        answer, took = await answer_while_trickling(
            served, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n", b"a" * 500, 0.05)
    assert statuses(answer) == [408]
    assert HEADER_TIMEOUT * 0.9 <= took < HEADER_TIMEOUT + 1


async def test_a_body_at_a_fair_rate_may_take_longer_than_the_head_start(served: Served) -> None:
    # 400 bytes at ~2,000 bytes/s in 0.05 s steps: longer than HEADER_TIMEOUT, faster than the minimum.
    stream = await served.connect()
    body = b"b" * 400
    with trio.fail_after(10):
        await stream.send_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                              b"Content-Length: 400\r\n\r\n")
        start = trio.current_time()
        for i in range(0, 400, 25):
            await stream.send_all(body[i:i + 25])
            await trio.sleep(0.04)
        assert trio.current_time() - start > HEADER_TIMEOUT
        answer = await read_until(stream)
    assert statuses(answer) == [200] and split_responses(answer)[0][2] == body
    await stream.aclose()


async def test_a_request_must_be_whole_within_the_request_timeout(nursery: trio.Nursery) -> None:
    # A fair body rate does not buy more than request_timeout in all.
    served = await start_edge(nursery, EdgeLimits(http=HttpLimits(
        header_timeout=0.3, body_min_rate=10, request_timeout=0.8)))
    with trio.fail_after(10):
        answer, took = await answer_while_trickling(
            served, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n", b"a" * 500, 0.02)
    assert statuses(answer) == [408]
    assert 0.7 <= took < 1.8


async def test_blank_lines_do_not_keep_an_idle_connection_open(served: Served) -> None:
    with trio.fail_after(10):
        answer, took = await answer_while_trickling(served, get_headers(), b"\r\n" * 200, 0.02)
    assert statuses(answer) == [200]  # then closed without a word
    assert took < 0.6 + 1


async def test_pipelined_requests_leave_room_for_other_tasks(served: Served) -> None:
    """2,000 requests in one write are answered one at a time: another task runs between
    them (a checkpoint per request), and another connection is answered meanwhile."""
    count = 2000
    ticks = 0
    done = trio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await trio.sleep(0)

    stream = await served.connect()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await stream.send_all(get_headers() * (count - 1) + get_headers("Connection: close"))
            answer = await read_until(stream, timeout=15)
            done.set()
    assert statuses(answer) == [200] * count
    assert ticks >= count // 2, ticks
    await stream.aclose()


async def test_one_address_cannot_take_every_connection(nursery: trio.Nursery) -> None:
    served = await start_edge(nursery, EdgeLimits(connections_per_client=2, uncapped_peers=()))
    with trio.fail_after(10):
        first, second = await served.connect(), await served.connect()
        for stream in (first, second):
            await stream.send_all(get_headers())
            assert statuses(await read_until(stream, closed=False)) == [200]
        refused = await exchange(served, get_headers())
        assert statuses(refused) == [429]
        assert split_responses(refused)[0][1]["connection"] == "close"
        assert b"too_many_connections" in refused
        await first.aclose()
        await trio.testing.wait_all_tasks_blocked()  # the edge has seen the close
        assert statuses(await exchange(served, get_headers("Connection: close"))) == [200]
        await second.aclose()


async def test_a_flood_of_refused_connections_is_not_lingered_on(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past REFUSALS_LINGERING refusals at once, a refused connection is answered and closed
    at once (holding it open would spend the fds the cap protects)."""
    monkeypatch.setattr(listener, "REFUSALS_LINGERING", 0)
    served = await start_edge(nursery, EdgeLimits(connections_per_client=1, uncapped_peers=()))
    with trio.fail_after(10):
        first = await served.connect()
        refused = await served.connect()
        answer = await read_until(refused)  # without sending anything: 429, then closed
        assert statuses(answer) == [429]
        await refused.aclose()
        await first.aclose()


async def test_loopback_peers_are_not_capped_by_default(nursery: trio.Nursery) -> None:
    served = await start_edge(nursery, EdgeLimits(connections_per_client=1))
    with trio.fail_after(10):
        streams = [await served.connect() for _ in range(3)]
        for stream in streams:
            await stream.send_all(get_headers())
            assert statuses(await read_until(stream, closed=False)) == [200]
        for stream in streams:
            await stream.aclose()


def handshake(forwarded_for: str) -> bytes:
    return (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"X-Forwarded-For: " + forwarded_for.encode() + b"\r\n\r\n")


async def test_behind_the_proxy_the_cap_counts_each_clients_websockets(nursery: trio.Nursery) -> None:
    """Behind a trusted proxy every connection is the proxy's: plain connections are not
    capped (it pools them), a client's open websockets are, by the address the proxy saw."""
    served = await start_edge(nursery, EdgeLimits(connections_per_client=1, uncapped_peers=(),
                                                  trust_proxy_headers=True))
    with trio.fail_after(10):
        pooled = [await served.connect() for _ in range(3)]
        for stream in pooled:
            await stream.send_all(get_headers())
            assert statuses(await read_until(stream, closed=False)) == [200]

        first = await served.connect()
        await first.send_all(handshake("198.51.100.9, 203.0.113.7"))  # the proxy's hop is last
        assert b"101 Switching Protocols" in await first.receive_some(4096)
        refused = await exchange(served, handshake("203.0.113.7"))
        assert statuses(refused) == [429] and b"too_many_connections" in refused
        other = await served.connect()
        await other.send_all(handshake("203.0.113.8"))
        assert b"101 Switching Protocols" in await other.receive_some(4096)

        await first.aclose()  # the edge sees the close; the address has room again
        await trio.testing.wait_all_tasks_blocked()
        again = await served.connect()
        await again.send_all(handshake("203.0.113.7"))
        assert b"101 Switching Protocols" in await again.receive_some(4096)
        for stream in [*pooled, other, again]:
            await stream.aclose()


async def test_out_of_file_descriptors_is_said_once_and_backed_off(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture,
) -> None:
    """With the fd limit reached, the listener backs off and logs once, not ten times a
    second; the connections waiting in the backlog are served once fds are free again."""
    served = await start_edge(nursery)
    clients = []
    for _ in range(6):  # connected by the kernel, waiting in the backlog
        client = socket.socket()
        client.setblocking(False)
        try:
            client.connect((served.host, served.port))
        except BlockingIOError:
            pass
        clients.append(client)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    caplog.set_level(logging.WARNING, logger="nursery.edge.listener")
    with trio.fail_after(10):
        # No fd left for accept(): every one below the limit is taken.
        spare = []
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (_open_fds() + 1, hard))
            while True:
                try:
                    spare.append(socket.socket())
                except OSError:
                    break
            await trio.sleep(1.2)  # the attack's duration, not a synchronisation
        finally:
            for sock in spare:
                sock.close()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        said = [r for r in caplog.records if "cannot accept" in r.getMessage()]
        assert len(said) == 1, [r.getMessage() for r in said]
        for client in clients:
            client.sendall(get_headers("Connection: close"))
        for client in clients:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(client))
            assert statuses(await read_until(stream)) == [200]
            await stream.aclose()


def _open_fds() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


def get_headers(*extra: str) -> bytes:
    return ("\r\n".join(["GET /headers HTTP/1.1", "Host: x", *extra]) + "\r\n\r\n").encode()
