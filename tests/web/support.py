"""Real ``nursery serve`` processes for the browser tests (see conftest.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.servers import free_port

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


@dataclass
class Instance:
    """One ``nursery serve`` process on a fixed port (kept across restarts)."""

    name: str
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    cwd: Path | None = None  # where ``python -m nursery`` finds the package (None: ours)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "nursery", "serve", "--port", str(self.port),
                 "--data-dir", str(self.log_path.parent / self.name)],
                env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,  # no terminal ^C
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited during startup:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready in {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM (a graceful shutdown: open websockets get 1012) and wait; SIGKILL if it
        does not exit in time. Returns the exit status."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
            raise

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Cluster:
    a: Instance
    b: Instance

    def register(self, password: str, device: str = "setup", email: str | None = None) -> str:
        """A new user (a unique email unless given), signed up through the API; returns the
        email."""
        email = email or f"web-{uuid.uuid4().hex[:10]}@example.com"
        r = httpx.post(f"{self.a.url}/api/auth/register",
                       json={"email": email, "password": password, "device": device})
        assert r.status_code == 201, r.text
        return email

    def login(self, email: str, password: str, device: str) -> dict[str, Any]:
        """A new session through the API: what the page keeps in localStorage."""
        r = httpx.post(f"{self.a.url}/api/auth/login",
                       json={"email": email, "password": password, "device": device})
        assert r.status_code == 200, r.text
        body = r.json()
        return {"token": body["token"], "user": body["user"], "sessionId": body["session"]["id"]}


class Server:
    """The user's todos as the server has them (through the API, as a third device)."""

    def __init__(self, cluster: Cluster, email: str, password: str,
                 device: str = "checker") -> None:
        self.url = cluster.b.url
        token = cluster.login(email, password, device)["token"]
        self.headers = {"Authorization": f"Bearer {token}"}

    def create(self, title: str, **fields: Any) -> dict[str, Any]:
        r = httpx.post(f"{self.url}/api/todos", json={"title": title, **fields},
                       headers=self.headers)
        assert r.status_code == 201, r.text
        created: dict[str, Any] = r.json()["todo"]
        return created

    def todos(self) -> tuple[int, list[dict[str, Any]]]:
        r = httpx.get(f"{self.url}/api/todos?limit=200", headers=self.headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["next_cursor"] is None
        return body["rev"], sorted(body["items"], key=lambda t: (t["created_at"], t["id"]))

    def titles(self) -> dict[str, bool]:
        return {t["title"]: t["done"] for t in self.todos()[1]}

    def wait_until(self, check: Callable[[list[dict[str, Any]]], bool],
                   timeout: float = 2.0) -> None:
        """Poll the server (every 20 ms, at most ``timeout`` s) until ``check(todos)``: for
        a write another page made, which the page shows before the server has it."""
        deadline = time.monotonic() + timeout
        while not check(todos := self.todos()[1]):
            assert time.monotonic() < deadline, f"the server still has {todos}"
            time.sleep(0.02)
