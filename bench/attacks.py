"""The edge under attack (issue 21): each attack against one local instance, byte-exact over
raw sockets (``raw.py``), and what it cost the instance.

    .venv/bin/python bench/attacks.py --table                       # this tree's code
    .venv/bin/python bench/attacks.py --server-source /work/main --rounds 3 --out before.json --table
    .venv/bin/python bench/attacks.py --only trickle,ws-pings

It starts PostgreSQL, Redis and ONE ``nursery serve`` with its default settings and rate limits
(``local_cluster.py``; ``--server-source DIR`` runs the instance from another checkout),
registers one user through the API, then runs
each attack in turn. For each it prints one JSON object (one line):

- ``answer``: what the attacker got back (status lines, close code, whether and after how long
  the server closed the connection), with ``summary``, a few words of it;
- ``instance``: CPU seconds the instance used (/proc/<pid>/stat, from the attack's start to a
  second after its end), its RSS before, at its peak (sampled every 50 ms) and a second after;
- ``healthz``: ``GET /healthz`` on another keep-alive connection, from another process, every
  20 ms while the attack runs: polls, errors, median and worst latency. A request the attack
  stalls is waited for, so the worst latency is the whole stall.

Each object also has ``round``, ``server_commit`` (``git describe --dirty`` of the instance's
tree), ``utc`` (when the attack ended) and ``loadavg_1m_before`` (the box is shared: say so).
``baseline`` (nothing but the polling, 3 s) shows what the measuring itself costs. Every attack
is bounded in bytes and time, talks to loopback only and stops by itself; before the next one
starts, the instance is given up to 30 s to fall quiet.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import select
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import raw
from connections import rss_kib
from fanout import cpu_seconds
from local_cluster import local_cluster

POLL_INTERVAL = 0.02  # seconds between /healthz polls
RSS_INTERVAL = 0.05  # seconds between RSS samples
HEALTHZ_TIMEOUT = 120.0  # a stalled poll is waited for this long at most
MIN_WINDOW = 1.0  # seconds /healthz is polled at least, however short the attack
SETTLE = 1.0  # seconds after an attack before the instance's CPU and RSS are read
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@dataclass
class Target:
    address: raw.Address
    pid: int
    token: bytes
    args: argparse.Namespace


# -- measuring -------------------------------------------------------------------------------------

def poll_healthz(address: raw.Address, commands: Connection) -> None:
    """The poller's process: on "start", poll /healthz on a fresh keep-alive connection until
    "stop" arrives, then send back the latencies. Its own process, so that the attacker's
    threads cannot delay it (the GIL)."""
    while commands.recv() == "start":
        latencies: list[float] = []
        errors: list[str] = []
        sock = None
        while not commands.poll():
            began = time.monotonic()
            try:
                if sock is None:
                    sock = raw.connect(address)
                sock.sendall(HEALTHZ)
                answers = raw.read_answers(sock, began, HEALTHZ_TIMEOUT, expect=1)
                if not answers.statuses or answers.statuses[0].split()[1] != "200":
                    errors.append(answers.statuses[0] if answers.statuses else "no answer")
                    sock.close()
                    sock = None
            except OSError as exc:
                errors.append(type(exc).__name__)
                sock = None
            elapsed = time.monotonic() - began
            latencies.append(elapsed * 1000)
            time.sleep(max(0.0, POLL_INTERVAL - elapsed))
        commands.recv()  # "stop"
        if sock is not None:
            sock.close()
        commands.send({"latencies_ms": latencies, "errors": errors})


class Poller:
    def __init__(self, address: raw.Address) -> None:
        context = multiprocessing.get_context("spawn")
        self._commands, theirs = context.Pipe()
        self._process = context.Process(target=poll_healthz, args=(address, theirs), daemon=True)
        self._process.start()

    def start(self) -> None:
        self._commands.send("start")

    def stop(self) -> dict[str, Any]:
        self._commands.send("stop")
        result: dict[str, Any] = self._commands.recv()
        latencies = result["latencies_ms"]
        return {
            "polls": len(latencies),
            "errors": len(result["errors"]),
            "error_kinds": dict(Counter(result["errors"])),
            "median_ms": round(statistics.median(latencies), 2) if latencies else None,
            "p99_ms": round(sorted(latencies)[int(0.99 * (len(latencies) - 1))], 2) if latencies else None,
            "worst_ms": round(max(latencies), 2) if latencies else None,
        }

    def close(self) -> None:
        self._commands.send("quit")
        self._process.join(5)


class RssSampler:
    """The instance's peak RSS, read every ``RSS_INTERVAL`` seconds on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
            except (OSError, RuntimeError):
                return  # the instance is gone
            if self._stop.wait(RSS_INTERVAL):
                return


def wait_quiet(pid: int, limit: float = 30.0) -> None:
    """Until the instance uses under 10 % of a core over half a second (a previous attack's
    tail must not be billed to the next), at most ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(0.5)
        after = cpu_seconds(pid)
        if before is None or after is None or after - before < 0.05:
            return


def measure(name: str, attack: Callable[[Target], dict[str, Any]], target: Target, poller: Poller) -> dict[str, Any]:
    wait_quiet(target.pid)
    rss_before = rss_kib(target.pid)
    cpu_before = cpu_seconds(target.pid)
    load = os.getloadavg()[0]
    started = time.monotonic()
    poller.start()
    with RssSampler(target.pid) as sampler:
        try:
            answer = attack(target)
        except OSError as exc:  # the attack could not be made (the instance refused it whole)
            answer = {"summary": f"attack failed: {exc!r}"}
        seconds = time.monotonic() - started
        time.sleep(max(0.0, started + MIN_WINDOW - time.monotonic()))
        healthz = poller.stop()
        time.sleep(SETTLE)
    cpu_after = cpu_seconds(target.pid)
    alive = cpu_after is not None
    rss_after = rss_kib(target.pid) if alive else None
    return {
        "attack": name,
        "seconds": round(seconds, 2),
        "answer": answer,
        "instance": {
            "alive": alive,
            "cpu_seconds": round(cpu_after - cpu_before, 2) if cpu_after is not None and cpu_before is not None else None,
            "rss_kib_before": rss_before,
            "rss_kib_peak": sampler.peak,
            "rss_kib_after": rss_after,
            "rss_kib_peak_delta": sampler.peak - rss_before,
        },
        "healthz": healthz,
        "loadavg_1m_before": round(load, 2),
    }


# -- the attacks -----------------------------------------------------------------------------------

def baseline(target: Target) -> dict[str, Any]:
    time.sleep(3)
    return {"summary": "nothing sent"}


def _ws_outcome_summary(outcome: raw.WebSocketOutcome) -> str:
    if outcome.close_code is not None:
        said = f"close {outcome.close_code}"
    else:
        said = "closed, no close frame" if outcome.closed else "still open"
    return f"{said} after {outcome.seconds:.1f} s"


def _empty_fragments(target: Target, sockets: int, fragments: int) -> dict[str, Any]:
    """A text frame ``01 81 <mask> 6a`` (fin clear) then ``00 80 <mask>`` (empty, fin clear)
    ``fragments`` times, all in one write, on each of ``sockets`` websockets at once."""
    opened = [raw.open_websocket(target.address) for _ in range(sockets)]
    data = b"\x01\x81" + raw.MASK + b"\x6a" + (b"\x00\x80" + raw.MASK) * fragments
    outcomes: list[raw.WebSocketOutcome] = [raw.WebSocketOutcome()] * sockets
    started = time.monotonic()

    def one(index: int) -> None:
        sock, leftover = opened[index]
        with sock:
            error = raw.send(sock, data)
            outcomes[index] = raw.FrameReader(sock, leftover).read_until_closed(started, target.args.ws_wait)
            outcomes[index].send_error = error

    threads = [threading.Thread(target=one, args=(i,)) for i in range(sockets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "sockets": sockets, "fragments_each": fragments, "bytes_each": len(data),
        "outcomes": [o.to_json() for o in outcomes],
        "summary": "; ".join(sorted({_ws_outcome_summary(o).split(" after ")[0] for o in outcomes}))
                   + f" after {max(o.seconds for o in outcomes):.1f} s",
    }


def ws_empty_fragments(target: Target) -> dict[str, Any]:
    return _empty_fragments(target, 1, 40_000)


def ws_empty_fragments_4x(target: Target) -> dict[str, Any]:
    return _empty_fragments(target, 4, 30_000)


def header_no_crlf(target: Target) -> dict[str, Any]:
    """``X-A: `` then MiBs of ``a`` and never the line's end, 64 KiB a write; stops sending
    once the server answers or closes, then reads until it closes (``--answer-wait`` at most)."""
    total, chunk = target.args.header_mib * 1024 * 1024, b"a" * 65536
    started = time.monotonic()
    reader = raw.ResponseReader()
    sent, answered = 0, None
    with raw.connect(target.address) as sock:
        error = raw.send(sock, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ")
        while error is None and sent < total and time.monotonic() - started < 60:
            data = raw.receive(sock, time.monotonic())  # anything from the server yet?
            if data is not None:
                reader.feed(data)
                reader.answers.closed = not data
                if reader.answers.closed or reader.answers.statuses:
                    break
            error = raw.send(sock, chunk)
            sent += 0 if error else len(chunk)
        if reader.answers.statuses or error:
            answered = time.monotonic() - started
        answers = reader.answers if reader.answers.closed else raw.read_answers(
            sock, started, target.args.answer_wait, reader=reader)
    answers.send_error = error
    said = answers.statuses[0] if answers.statuses else "no answer"
    state = "then closed" if answers.closed else f"still open {target.args.answer_wait:.0f} s after the last byte"
    when = f" after {answered:.2f} s" if answered is not None else ""
    return {
        "header_bytes_sent": sent, "answered_or_refused_after_seconds": answered, **answers.to_json(),
        "summary": f"{said}{when}, {state} ({sent / 1048576:.1f} MiB written by then)",
    }


TRICKLED = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Trickle: " + b"a" * 200 + b"\r\n\r\n"


def _trickle(target: Target, sockets: int) -> dict[str, Any]:
    """``sockets`` connections each send ``TRICKLED`` a byte a second for at most
    ``--trickle-seconds``; when did the server cut each, and with what?"""
    conns = [raw.connect(target.address) for _ in range(sockets)]
    readers = {sock: raw.ResponseReader() for sock in conns}
    cut: dict[Any, float] = {}
    started = time.monotonic()
    end, sent = started + target.args.trickle_seconds, 0
    try:
        while time.monotonic() < end and len(cut) < sockets:
            for sock in conns:
                if sock not in cut and raw.send(sock, TRICKLED[sent:sent + 1]) is not None:
                    cut[sock] = time.monotonic() - started
            sent += 1
            tick = min(started + sent, end)
            while (left := tick - time.monotonic()) > 0 and len(cut) < sockets:
                for sock in select.select([s for s in conns if s not in cut], [], [], left)[0]:
                    data = raw.receive(sock, time.monotonic() + 1)
                    if data:
                        readers[sock].feed(data)
                    if not data or readers[sock].answers.statuses:  # closed, or answered
                        readers[sock].answers.closed = not data
                        cut[sock] = time.monotonic() - started
    finally:
        for sock in conns:
            sock.close()
    statuses = Counter(readers[s].answers.statuses[0] if readers[s].answers.statuses else
                       ("closed without an answer" if s in cut else "still open") for s in conns)
    cut_after = sorted(cut.values())
    return {
        "sockets": sockets, "bytes_sent_each": sent, "cut": len(cut_after),
        "cut_after_seconds": {"first": round(cut_after[0], 2), "median": round(statistics.median(cut_after), 2),
                              "last": round(cut_after[-1], 2)} if cut_after else None,
        "answers": dict(statuses),
        "summary": (f"{len(cut_after)}/{sockets} cut" + (f" at {statistics.median(cut_after):.1f} s"
                    if cut_after else f", all open after {target.args.trickle_seconds:.0f} s")
                    + ": " + ", ".join(f"{k} ×{v}" if sockets > 1 else k for k, v in statuses.items())),
    }


def trickle(target: Target) -> dict[str, Any]:
    return _trickle(target, 1)


def trickle_many(target: Target) -> dict[str, Any]:
    """``--trickle-sockets`` trickling connections, while new connections (one every 0.25 s,
    the way a normal client comes) ask for /healthz."""
    fresh: list[float] = []
    failed: list[str] = []
    done = threading.Event()

    def fresh_connections() -> None:
        while not done.wait(0.25):
            began = time.monotonic()
            try:
                answers = raw.request(target.address, HEALTHZ, wait=10, expect=1)
                if answers.statuses and answers.statuses[0].split()[1] == "200":
                    fresh.append((time.monotonic() - began) * 1000)
                else:
                    failed.append(answers.statuses[0] if answers.statuses else "no answer")
            except OSError as exc:
                failed.append(type(exc).__name__)

    thread = threading.Thread(target=fresh_connections)
    thread.start()
    try:
        result = _trickle(target, target.args.trickle_sockets)
    finally:
        done.set()
        thread.join()
    result["fresh_connections"] = {
        "ok": len(fresh), "failed": len(failed), "failures": dict(Counter(failed)),
        "median_ms": round(statistics.median(fresh), 2) if fresh else None,
        "worst_ms": round(max(fresh), 2) if fresh else None,
    }
    result["summary"] += f"; fresh /healthz {len(fresh)} ok, {len(failed)} failed"
    return result


def _one_answer(target: Target, data: bytes, wait: float = 3.0, expect: int | None = None) -> dict[str, Any]:
    """``data`` on a new connection; answers until it closes, ``expect`` are in, or ``wait`` s."""
    answers = raw.request(target.address, data, wait=wait, expect=expect)
    said = ", ".join(answers.statuses) or "no answer"
    state = "closed" if answers.closed else ("kept open" if expect else f"open after {wait:.0f} s")
    return {**answers.to_json(), "summary": f"{said} ({state})"}


def trailers_auth(target: Target) -> dict[str, Any]:
    """The token only in a trailer: 200 means trailers became headers."""
    return _one_answer(target, b"GET /api/me HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"0\r\nAuthorization: Bearer " + target.token + b"\r\n\r\n", expect=1)


def http10_te_smuggle(target: Target) -> dict[str, Any]:
    """HTTP/1.0 with a chunked body (faulty framing: RFC 9112 6.1 says close), and a second
    request behind it: a second answer means it was smuggled through. Kept alive, as a
    1.0 client may ask; ``plain`` is the same without ``Connection: keep-alive``."""
    shape = (b"GET /healthz HTTP/1.0\r\nHost: x\r\n%sTransfer-Encoding: chunked\r\n\r\n"
             b"0\r\n\r\nGET /api/me HTTP/1.1\r\nHost: x\r\n\r\n")
    plain = _one_answer(target, shape % b"")
    return {**_one_answer(target, shape % b"Connection: keep-alive\r\n"), "plain": plain}


def upgrade_h2c(target: Target) -> dict[str, Any]:
    """What ``curl --http2`` sends over cleartext: the request must be served (no upgrade)."""
    return _one_answer(target, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                               b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n", expect=1)


def _pipelined(target: Target, requests: list[bytes], ids: list[str] | None) -> dict[str, Any]:
    """``requests`` in one write, answers read meanwhile (they must not fill the socket's
    buffers); ``ids``: each request's X-Request-ID, to see whether the answers came in order."""
    data = b"".join(requests)
    started = time.monotonic()
    with raw.connect(target.address) as sock:
        result: list[raw.Answers] = []
        reader = threading.Thread(target=lambda: result.append(
            raw.read_answers(sock, started, 60, expect=len(requests))))
        reader.start()
        error = raw.send(sock, data)
        reader.join()
    answers = result[0]
    answers.send_error = error
    got = [h.get("x-request-id") for h in answers.headers]
    in_order = None if ids is None else got == ids[:len(got)]
    statuses = Counter(s.split(" ", 1)[1] for s in answers.statuses)
    order = "" if in_order is None else (" in order" if in_order else " OUT OF ORDER")
    return {
        "requests": len(requests), "bytes": len(data), "answers": len(got), "in_order": in_order,
        "statuses": dict(statuses), "closed_by_server": answers.closed, "seconds": round(answers.seconds, 3),
        "summary": f"{len(got)}/{len(requests)} answered{order} in {answers.seconds:.1f} s: "
                   + ", ".join(f"{k} ×{v}" for k, v in statuses.items()),
    }


def pipelined_deletes(target: Target) -> dict[str, Any]:
    """2,114 ``DELETE /api/todos/<random id>`` with a valid token, in one write, each with its
    own X-Request-ID (the default write rate turns most into 429s)."""
    ids = [f"p{i}" for i in range(2114)]
    return _pipelined(target, [
        b"DELETE /api/todos/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nX-Request-ID: %s\r\n\r\n"
        % (os.urandom(16).hex().encode(), target.token, i.encode()) for i in ids], ids)


def pipelined_deletes_small(target: Target) -> dict[str, Any]:
    """2,114 ``DELETE /api/todos/<n>`` without a token, ~40 bytes each: 2 reads of the edge's
    64 KiB buffer hold them all, and each answer (401) needs no database."""
    return _pipelined(target, [b"DELETE /api/todos/%d HTTP/1.1\r\nHost:x\r\n\r\n" % i for i in range(2114)], None)


SHAPES = {
    "host-missing": b"GET /healthz HTTP/1.1\r\n\r\n",
    "host-duplicated": b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "host-a-b": b"GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n",
    "http-2.0": b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n",
    "http-0.9": b"GET /\r\n",
    "http-0.9-blank-line": b"GET /\r\n\r\n",
    "method-foo": b"FOO /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "te-gzip-chunked": b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                       b"5\r\nhello\r\n0\r\n\r\n",
    "ws-over-http-1.0": raw.handshake_bytes(version="1.0"),
    "ws-key-trailing-space": raw.handshake_bytes(key="dGhlIHNhbXBsZSBub25jZQ== "),
}


def http_shapes(target: Target) -> dict[str, Any]:
    """Each shape on its own connection: the first status line (or what happened instead)."""
    answers = {}
    for name, data in SHAPES.items():
        got = raw.request(target.address, data, wait=3, expect=1)
        answers[name] = got.statuses[0].split(" ", 1)[1] if got.statuses else (
            "closed without an answer" if got.closed else "no answer in 3 s")
    return {"answers": answers,
            "summary": "; ".join(f"{name} {status.split()[0] if status[0].isdigit() else status}"
                                 for name, status in answers.items())}


def ws_pings(target: Target) -> dict[str, Any]:
    """20,000 empty pings in one write before any hello: how many pongs before the close?"""
    sock, leftover = raw.open_websocket(target.address)
    with sock:
        started = time.monotonic()
        error = raw.send(sock, raw.masked(0x9) * 20_000)
        outcome = raw.FrameReader(sock, leftover).read_until_closed(started, target.args.ws_wait)
    outcome.send_error = error
    return {**outcome.to_json(), "summary": f"{outcome.pongs} pongs, {_ws_outcome_summary(outcome)}"}


def _ws_frame(target: Target, data: bytes) -> dict[str, Any]:
    sock, leftover = raw.open_websocket(target.address)
    with sock:
        started = time.monotonic()
        error = raw.send(sock, data)
        outcome = raw.FrameReader(sock, leftover).read_until_closed(started, target.args.ws_wait)
    outcome.send_error = error
    reason = f" ({outcome.close_reason})" if outcome.close_reason else ""
    return {**outcome.to_json(), "summary": _ws_outcome_summary(outcome) + reason}


def ws_nonminimal_length(target: Target) -> dict[str, Any]:
    """A 5-byte text frame whose length is in the 16-bit form (RFC 6455 5.2: MUST be minimal)."""
    return _ws_frame(target, b"\x81\xfe\x00\x05" + raw.MASK + raw.apply_mask(b"hello"))


def ws_64bit_topbit(target: Target) -> dict[str, Any]:
    """A 64-bit length with its most significant bit set (RFC 6455 5.2: MUST be 0): 1002."""
    return _ws_frame(target, b"\x82\xff\x80\x00\x00\x00\x00\x00\x00\x05" + raw.MASK + raw.apply_mask(b"hello"))


def ws_invalid_utf8_early(target: Target) -> dict[str, Any]:
    """A text message whose first fragment is not UTF-8, then two more fragments a second
    apart: closed after the first (fail fast) or only at the end?"""
    fragments = [raw.masked(0x1, b"\xff\xfeabc", fin=False), raw.masked(0x0, b"abc", fin=False),
                 raw.masked(0x0, b"abc", fin=True)]
    sock, leftover = raw.open_websocket(target.address)
    with sock:
        frames = raw.FrameReader(sock, leftover)
        started = time.monotonic()
        for number, fragment in enumerate(fragments, 1):
            frames.outcome.send_error = raw.send(sock, fragment)
            outcome = frames.read_until_closed(started, 1.0 if number < len(fragments) else target.args.ws_wait)
            if outcome.closed or outcome.close_code is not None or outcome.send_error:
                break
    return {**outcome.to_json(), "closed_after_fragment": number,
            "summary": f"{_ws_outcome_summary(outcome)}, after fragment {number} of {len(fragments)}"}


ATTACKS: dict[str, Callable[[Target], dict[str, Any]]] = {
    "baseline": baseline,
    "ws-empty-fragments": ws_empty_fragments,
    "ws-empty-fragments-4x": ws_empty_fragments_4x,
    "header-no-crlf": header_no_crlf,
    "trickle": trickle,
    "trickle-many": trickle_many,
    "trailers-auth": trailers_auth,
    "http10-te-smuggle": http10_te_smuggle,
    "upgrade-h2c": upgrade_h2c,
    "pipelined-deletes": pipelined_deletes,
    "pipelined-deletes-small": pipelined_deletes_small,
    "http-shapes": http_shapes,
    "ws-pings": ws_pings,
    "ws-nonminimal-length": ws_nonminimal_length,
    "ws-64bit-topbit": ws_64bit_topbit,
    "ws-invalid-utf8-early": ws_invalid_utf8_early,
}


# -- running -------------------------------------------------------------------------------------

def _post_json(address: raw.Address, path: bytes, payload: dict[str, Any]) -> Any:
    body = json.dumps(payload).encode()
    with raw.connect(address) as sock:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (path, len(body), body))
        data, until = b"", time.monotonic() + 30
        while chunk := raw.receive(sock, until):
            data += chunk
    return json.loads(data.partition(b"\r\n\r\n")[2])


def register(address: raw.Address) -> bytes:
    """A new user's token (for the attacks that need one)."""
    login = _post_json(address, b"/api/auth/register", {
        "email": f"attacker-{os.urandom(6).hex()}@example.com", "password": "attacker-password"})
    token: str = login["token"]
    return token.encode()


def source_commit(directory: Path | None) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(directory or Path(__file__).parent), "describe", "--always",
                               "--dirty"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def table(results: list[dict[str, Any]]) -> str:
    """Medians over rounds per attack, as markdown."""
    by_attack: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        by_attack.setdefault(result["attack"], []).append(result)

    def median(rows: list[dict[str, Any]], part: str, key: str, scale: float = 1, digits: int = 0) -> str:
        values = [r[part][key] for r in rows if r[part][key] is not None]
        return f"{statistics.median(values) / scale:.{digits}f}" if values else "-"

    lines = ["| attack | answer (first round) | instance CPU s | RSS peak Δ MiB | healthz worst / median ms "
             "| healthz errors | rounds |", "|---|---|---|---|---|---|---|"]
    for name, rows in by_attack.items():
        errors = sum(r["healthz"]["errors"] for r in rows)
        lines.append(f"| {name} | {rows[0]['answer']['summary']} | {median(rows, 'instance', 'cpu_seconds', digits=2)} "
                     f"| {median(rows, 'instance', 'rss_kib_peak_delta', 1024, 1)} "
                     f"| {median(rows, 'healthz', 'worst_ms')} / {median(rows, 'healthz', 'median_ms', digits=1)} "
                     f"| {errors} | {len(rows)} |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    names = args.only.split(",") if args.only else list(ATTACKS)
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise SystemExit(f"unknown attacks: {', '.join(unknown)} (known: {', '.join(ATTACKS)})")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # trickle-many's sockets
    results = []
    async with local_cluster(1, server_source=args.server_source, lift_rate_limits=False) as cluster:
        host, port = cluster.urls[0].removeprefix("http://").split(":")
        address = (host, int(port))
        target = Target(address, cluster.pids[0], await trio.to_thread.run_sync(register, address), args)
        poller = Poller(address)
        try:
            for round_ in range(1, args.rounds + 1):
                for name in names:
                    result = await trio.to_thread.run_sync(measure, name, ATTACKS[name], target, poller)
                    result = {"round": round_, "server_source": str(args.server_source or "."),
                              "server_commit": source_commit(args.server_source),
                              "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **result}
                    print(json.dumps(result), flush=True)
                    results.append(result)
                    if args.out:  # rewritten whole after each attack: a cut-short run keeps what it has
                        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        finally:
            poller.close()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-source", type=Path,
                        help="run the instance from this checkout (default: this tree)")
    parser.add_argument("--only", help=f"comma-separated attacks, of: {', '.join(ATTACKS)}")
    parser.add_argument("--rounds", type=int, default=1, help="run the whole list this many times")
    parser.add_argument("--table", action="store_true", help="then a markdown table of medians over rounds")
    parser.add_argument("--out", help="also write the results to this file (one JSON array)")
    parser.add_argument("--trickle-seconds", type=float, default=20.0, help="how long a trickle goes on at most")
    parser.add_argument("--trickle-sockets", type=int, default=200, help="trickle-many's connections")
    parser.add_argument("--header-mib", type=int, default=16, help="header-no-crlf's line, MiB")
    parser.add_argument("--ws-wait", type=float, default=90.0,
                        help="seconds a websocket attack waits for the server to close")
    parser.add_argument("--answer-wait", type=float, default=5.0,
                        help="seconds header-no-crlf waits for an answer after its last byte")
    parsed = parser.parse_args()
    all_results = trio.run(main, parsed)
    if parsed.table:
        print(table(all_results), file=sys.stderr)
