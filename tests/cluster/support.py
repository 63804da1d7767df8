"""Helpers for the cluster tests: a real ``nursery cluster up`` supervisor (instances, Caddy)
as a subprocess, devices that roam through Caddy, and a writer that retries like a client.

- ``start_cluster`` runs ``python -m nursery.cluster up`` on free ports and waits until its
  state file says ready; ``RunningCluster.stop`` (called by the fixture at teardown, also on
  failure) stops it with SIGTERM and kills whatever is left (the supervisor, then the pids in
  its state file).
- ``RoamingDevice``: tests/live.py's ``Device`` (a strict mirror: revisions only go up) plus the
  reconnect loop of docs/protocol.md: on 1012/4008 reconnect at once, on anything else after a short
  backoff, always with ``since`` = the last revision applied. It records when each change
  arrived and how each connection ended; a broken guarantee (a revision out of order, a
  reset, its session ended) stops it and is kept in ``broken`` for the caller to report.
- ``Writer``: creates, toggles and deletes todos through Caddy with an ``Idempotency-Key`` per
  operation, retrying the same key on 502/503/504 and connection errors (and on 429 after its
  Retry-After), and keeps the model
  of what the server must hold afterwards. An operation that still fails after
  ``retry_deadline`` (or gets an answer it should not) is counted in ``failed`` and kept in
  ``failures``: the caller decides (tests assert none; bench/faults.py reports them).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from nursery.cluster import live_pids, read_state
from tests.live import Device
from tests.servers import free_port

PYTHON = sys.executable
RETRYABLE = {502, 503, 504}


def require_caddy() -> str:
    caddy = os.environ.get("NURSERY_CADDY") or shutil.which("caddy")
    if caddy is None:
        pytest.fail("caddy is not installed: apt-get install caddy (scripts/test installs it)")
    return caddy


def free_port_block(count: int) -> int:
    """A port P such that P..P+count-1 are all free now."""
    for _ in range(100):
        base = free_port()
        if all(_free(base + i) for i in range(1, count)) and base + count < 32768:
            return base
    raise RuntimeError(f"no block of {count} free ports found")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Where `cluster up` remembers its directory during the tests: not the account's own state.
TEST_STATE_HOME = Path(tempfile.gettempdir()) / f"nursery-test-state-{os.getuid()}"


def cluster_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURSERY_")}
    return {**env, "XDG_STATE_HOME": str(TEST_STATE_HOME), **extra}


@dataclass
class RunningCluster:
    directory: Path
    process: subprocess.Popen[bytes]
    proxy_port: int
    base_port: int
    instances: int

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.proxy_port}/ws"

    def state(self) -> dict[str, Any]:
        state = read_state(self.directory)
        assert state is not None, "no state file"
        return state

    def process_info(self, name: str) -> dict[str, Any]:
        return next(p for p in self.state()["processes"] if p["name"] == name)

    def pid(self, name: str) -> int:
        pid = self.process_info(name)["pid"]
        assert pid, f"{name} has no pid"
        return int(pid)

    async def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        with trio.fail_after(timeout):
            return await trio.run_process(
                [PYTHON, "-m", "nursery.cluster", *args, "--dir", str(self.directory)],
                capture_stdout=True, capture_stderr=True, check=False, env=cluster_env(),
            )

    def cli_sync(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "nursery.cluster", *args, "--dir", str(self.directory)],
            capture_output=True, text=True, check=False, env=cluster_env(), timeout=timeout,
        )

    async def wait_ready(self, name: str, *, after_starts: int, timeout: float = 60) -> None:
        """Until ``name`` was started more than ``after_starts`` times and is ready."""
        with trio.fail_after(timeout):
            while True:
                info = self.process_info(name)
                if info["starts"] > after_starts and info["state"] == "ready":
                    return
                await trio.sleep(0.05)

    def log_tails(self, lines: int = 15, only: str = "*") -> str:
        out = []
        for path in sorted((self.directory / "logs").glob(f"{only}.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"== {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM the supervisor and wait; kill it and its children if it does not stop."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        state = read_state(self.directory)
        for _name, pid, _signum in (live_pids(state) if state else []):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def start_cluster(directory: Path, *, instances: int = 3, timeout: float = 90,
                  extra_args: tuple[str, ...] = (), **env: str) -> RunningCluster:
    """Start ``nursery cluster up`` in the foreground as a subprocess; return once ready."""
    base, proxy = free_port_block(instances), free_port()
    directory.mkdir(parents=True, exist_ok=True)
    output = open(directory / "supervisor.out", "ab")
    process = subprocess.Popen(
        [PYTHON, "-m", "nursery.cluster", "up", "--dir", str(directory), "--instances", str(instances),
         "--base-port", str(base), "--proxy-port", str(proxy), *extra_args],
        stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=cluster_env(**env),
        start_new_session=True,
    )
    output.close()
    cluster = RunningCluster(directory, process, proxy, base, instances)
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(directory)
        if state and state["supervisor"]["pid"] == process.pid and state["supervisor"]["state"] == "ready":
            return cluster
        if process.poll() is not None or time.monotonic() > deadline:
            cluster.stop()
            out = (directory / "supervisor.out").read_text(errors="replace")
            raise AssertionError(f"the cluster did not start:\n{out[-3000:]}\n{cluster.log_tails()}")
        time.sleep(0.05)


# -- devices -------------------------------------------------------------------------------------


@dataclass
class _FirstStart:
    """Passes ``started()`` on to the roam task's status once (the first welcome)."""

    outer: Any
    done: bool = False

    def started(self, value: Any = None) -> None:
        if not self.done:
            self.done = True
            self.outer.started()


@dataclass
class RoamingDevice(Device):
    received_at: dict[int, float] = field(default_factory=dict)
    connections: list[tuple[str, int | None]] = field(default_factory=list)  # (instance, close code)
    failed_attempts: Counter[str] = field(default_factory=Counter)
    broken: str | None = None  # why it stopped: the guarantee it saw broken

    def apply(self, frame: dict[str, Any]) -> None:
        super().apply(frame)
        self.received_at[frame["rev"]] = trio.current_time()

    @property
    def close_codes(self) -> list[int | None]:
        return [code for _, code in self.connections]

    async def roam(self, ws_url: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Stay connected through ``ws_url`` until cancelled, resuming from ``self.rev``."""
        first = _FirstStart(task_status)
        while True:
            self.close_code = None
            try:
                await self.run(ws_url, task_status=first)
            except (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError) as exc:
                self.failed_attempts[type(exc).__name__] += 1
                await trio.sleep(random.uniform(0.05, 0.2))
                continue
            except AssertionError as exc:  # Device's checks: out of order, a reset
                self.broken = str(exc)
                first.started()
                return
            self.connections.append((self.instance, self.close_code))
            if self.close_code == 4001:
                self.broken = "session ended unexpectedly (4001)"
                first.started()
                return
            if self.close_code in (1012, 4008):
                await trio.sleep(random.uniform(0, 0.05))  # "reconnect now", with a little jitter
            else:
                await trio.sleep(random.uniform(0.05, 0.2))

    def longest_gap(self, start: float, end: float) -> float:
        """Longest time within [start, end] without a change arriving."""
        times = sorted(t for t in self.received_at.values() if start <= t <= end)
        points = [start, *times, end]
        return max(b - a for a, b in pairwise(points))


# -- the writer ------------------------------------------------------------------------------------


@dataclass
class Writer:
    """Writes through ``base`` until ``stop`` is set; ``model`` is what the server must hold."""

    client: httpx.AsyncClient
    base: str
    headers: dict[str, str]
    name: str = "w"
    model: dict[str, dict[str, Any]] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    operations: int = 0
    retried_operations: int = 0
    issued_at: dict[int, float] = field(default_factory=dict)  # rev → first attempt's start
    completed_at: list[float] = field(default_factory=list)
    retry_deadline: float = 30.0
    failed: int = 0
    failures: list[str] = field(default_factory=list)  # the first few, for the report
    deleted: set[str] = field(default_factory=set)  # ids whose DELETE was acknowledged
    operation_spans: list[tuple[float, float, int]] = field(default_factory=list)  # start, end, attempts

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response | None:
        """One operation: the same Idempotency-Key on every attempt; None once it has kept
        failing for ``retry_deadline``."""
        key = uuid.uuid4().hex
        headers = {**self.headers, "Idempotency-Key": key}
        started = trio.current_time()
        attempts = 0
        while True:
            attempts += 1
            try:
                response = await self.client.request(method, self.base + path, json=body,
                                                     headers=headers, timeout=10)
            except httpx.TransportError as exc:
                self.statuses[type(exc).__name__] += 1
            else:
                self.statuses[str(response.status_code)] += 1
                if response.status_code == 429:  # over the user's write rate: as told, later
                    await trio.sleep(float(response.headers.get("Retry-After", "1")))
                    continue
                if response.status_code not in RETRYABLE:
                    if attempts > 1:
                        self.retried_operations += 1
                    self.completed_at.append(trio.current_time())
                    self.operation_spans.append((started, trio.current_time(), attempts))
                    rev = (response.json().get("todo") or {}).get("rev") if response.content else None
                    if rev is not None:
                        self.issued_at[rev] = started
                    return response
            if trio.current_time() - started >= self.retry_deadline:
                self._fail(f"{method} {path} kept failing for {self.retry_deadline} s: {self.statuses}")
                return None
            await trio.sleep(random.uniform(0.05, 0.15))

    def _fail(self, why: str) -> None:
        self.failed += 1
        if len(self.failures) < 5:
            self.failures.append(why)

    def _answered(self, r: httpx.Response | None, status: int) -> bool:
        if r is None:
            return False  # counted already
        if r.status_code != status:
            self._fail(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:200]}")
            return False
        return True

    async def run(self, stop: trio.Event, interval: float) -> None:
        rng = random.Random(self.name)
        while not stop.is_set():
            self.operations += 1
            live = sorted(self.model)
            roll = rng.random()
            if roll < 0.25 and live:
                todo_id = rng.choice(live)
                done = not self.model[todo_id]["done"]
                r = await self.request("PATCH", f"/api/todos/{todo_id}", {"done": done})
                if self._answered(r, 200):
                    self.model[todo_id]["done"] = done
            elif roll < 0.4 and live:
                todo_id = rng.choice(live)
                r = await self.request("DELETE", f"/api/todos/{todo_id}")
                if self._answered(r, 204):
                    del self.model[todo_id]
                    self.deleted.add(todo_id)
            else:
                title = f"{self.name}-{self.operations}"
                r = await self.request("POST", "/api/todos", {"title": title})
                if self._answered(r, 201) and r is not None:
                    todo = r.json()["todo"]
                    if todo["title"] != title:  # a replay answered with another write's todo
                        self._fail(f"POST {title!r} answered with {todo['title']!r}")
                    self.model[todo["id"]] = {"title": todo["title"], "done": todo["done"]}
            await trio.sleep(interval)

    def longest_gap(self, start: float, end: float) -> float:
        times = sorted(t for t in self.completed_at if start <= t <= end)
        points = [start, *times, end]
        return max(b - a for a, b in pairwise(points))


def summary(devices: list[RoamingDevice], writers: list[Writer], start: float, end: float) -> dict[str, Any]:
    """The figures of one disruption window [start, end]."""
    latencies = sorted(
        device.received_at[rev] - writer.issued_at[rev]
        for device in devices for writer in writers for rev in writer.issued_at
        if rev in device.received_at and start <= writer.issued_at[rev] <= end
    )
    statuses: Counter[str] = Counter()
    for writer in writers:
        statuses.update(writer.statuses)

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1)

    return {
        "window_s": round(end - start, 1),
        "longest_delivery_gap_ms": round(max(d.longest_gap(start, end) for d in devices) * 1000),
        "delivery_gap_per_device_ms": [round(d.longest_gap(start, end) * 1000) for d in devices],
        "longest_write_gap_ms": round(max(w.longest_gap(start, end) for w in writers) * 1000),
        "write_to_delivery_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
        "operations": sum(w.operations for w in writers),
        "retried_operations": sum(w.retried_operations for w in writers),
        "responses": dict(statuses),
        "close_codes": dict(Counter(str(c) for d in devices for c in d.close_codes)),
        "failed_connects": dict(sum((d.failed_attempts for d in devices), Counter())),
    }


FIGURES = Path(__file__).resolve().parents[2] / "test-artifacts" / "cluster-figures.jsonl"


def report(capsys: pytest.CaptureFixture[str], title: str, figures: dict[str, Any]) -> None:
    """A fault run's figures: appended to test-artifacts/cluster-figures.jsonl, and shown on
    the terminal unless the run is quiet (-q: failures and the summary only)."""
    FIGURES.parent.mkdir(exist_ok=True)
    with FIGURES.open("a") as out:
        out.write(json.dumps({"title": title, "at": time.time(), **figures}) + "\n")
    if capsys.request.config.get_verbosity() >= 0:
        with capsys.disabled():
            print(f"\n[{title}] {json.dumps(figures)}")
