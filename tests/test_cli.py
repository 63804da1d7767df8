"""``nursery serve`` as a real process: embedded default, clean shutdown, failed startup."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.servers import free_port

NURSERY = [sys.executable, "-m", "nursery"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURSERY_")}
    return {**env, **extra}


async def _wait_ready(base: str, process: trio.Process, timeout: float = 30) -> None:
    async with httpx.AsyncClient() as client:
        with trio.fail_after(timeout):
            while True:
                assert process.returncode is None, "the server exited during startup"
                try:
                    if (await client.get(f"{base}/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.1)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_serve_embedded_default_and_sigterm(open_dir: Path) -> None:
    """No configuration: a private PostgreSQL in the data dir; SIGTERM → exit 0, database stopped."""
    port = free_port()
    data_dir = open_dir / "data"
    process = await trio.lowlevel.open_process(
        [*NURSERY, "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(base, process, timeout=60)
        async with httpx.AsyncClient() as client:
            r = await client.post(f"{base}/api/auth/register", json={"email": "a@b.io", "password": "long enough"})
            assert r.status_code == 201
            token = r.json()["token"]
            async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send_message(json.dumps({"type": "hello", "token": token, "since": None}))
                assert json.loads(await ws.get_message())["type"] == "welcome"
                pg_pid_file = data_dir / "pg" / "postmaster.pid"
                assert pg_pid_file.exists()
                pg_port = int(pg_pid_file.read_text().splitlines()[3])
                started = trio.current_time()
                process.send_signal(signal.SIGTERM)
                # An open websocket is told to reconnect elsewhere (1012), not cut (1006).
                with trio.fail_after(5):
                    try:
                        while True:
                            await ws.get_message()
                    except ConnectionClosed as closed:
                        assert closed.reason.code == 1012
        with trio.fail_after(10):
            await process.wait()
        assert process.returncode == 0
        assert trio.current_time() - started < 5
        assert not _port_open(port)
        assert not _port_open(pg_port) and not pg_pid_file.exists()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_restart_keeps_data_and_secret(open_dir: Path) -> None:
    port = free_port()
    data_dir = open_dir / "data"
    token = ""
    for run in range(2):
        process = await trio.lowlevel.open_process(
            [*NURSERY, "serve", "--port", str(port), "--data-dir", str(data_dir)],
            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            await _wait_ready(base, process, timeout=60)
            async with httpx.AsyncClient() as client:
                if run == 0:
                    r = await client.post(f"{base}/api/auth/register", json={"email": "a@b.io", "password": "long enough"})
                    token = r.json()["token"]
                    await client.post(f"{base}/api/todos", json={"title": "kept"}, headers={"Authorization": f"Bearer {token}"})
                else:  # the same token still works: the secret was kept in the data dir
                    r = await client.get(f"{base}/api/todos", headers={"Authorization": f"Bearer {token}"})
                    assert r.status_code == 200 and [t["title"] for t in r.json()["items"]] == ["kept"]
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                await process.wait()
            assert process.returncode == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_unreachable_database_fails_startup_clearly(tmp_path: Path) -> None:
    closed_port = free_port()
    with trio.fail_after(30):
        result = await trio.run_process(
            [*NURSERY, "serve", "--port", str(free_port()), "--data-dir", str(tmp_path)],
            env=_env(
                NURSERY_DATABASE_URL=f"postgresql://nobody@127.0.0.1:{closed_port}/x",
                NURSERY_SECRET_KEY="k" * 32,
                NURSERY_DB_TIMEOUT="3",
            ),
            capture_stdout=True, capture_stderr=True, check=False,
        )
    assert result.returncode != 0
    stderr = result.stderr.decode()
    assert "cannot start" in stderr and "PostgreSQL" in stderr
    assert "Traceback" not in stderr


async def test_a_port_in_use_fails_at_once_naming_it_before_the_embedded_database(tmp_path: Path) -> None:
    """With the embedded default, a taken port is found before PostgreSQL is initialised (which
    takes seconds): exit 1, the port named, nothing created in the data dir."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(30):
            result = await trio.run_process(
                [*NURSERY, "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")],
                env=_env(), capture_stdout=True, capture_stderr=True, check=False,
            )
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert f"port {port} on 127.0.0.1 is already in use" in stderr, stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "data" / "pg").exists()  # initdb never ran


async def test_database_url_without_secret_is_refused(database_url: str) -> None:
    with trio.fail_after(30):
        result = await trio.run_process(
            [*NURSERY, "serve", "--port", str(free_port())],
            env=_env(NURSERY_DATABASE_URL=database_url),
            capture_stdout=True, capture_stderr=True, check=False,
        )
    assert result.returncode != 0 and "NURSERY_SECRET_KEY" in result.stderr.decode()


def test_help_lists_every_setting() -> None:
    out = subprocess.run([*NURSERY, "--help"], capture_output=True, text=True, check=True).stdout
    for name in ("NURSERY_DATABASE_URL", "NURSERY_REDIS_URL", "NURSERY_SECRET_KEY", "NURSERY_DRAIN_DELAY"):
        assert name in out


async def test_sigterm_with_an_idle_keepalive_connection_exits_promptly(tmp_path: Path, database_url: str) -> None:
    """An idle keep-alive connection must not hold shutdown until its deadline; a request
    accepted during the drain is still answered (with Connection: close)."""
    port = free_port()
    process = await trio.lowlevel.open_process(
        [*NURSERY, "serve", "--port", str(port)],
        env=_env(NURSERY_DATABASE_URL=database_url, NURSERY_SECRET_KEY="k" * 32,
                 NURSERY_DRAIN_DELAY="1.0", NURSERY_SHUTDOWN_TIMEOUT="20"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(base, process)
        async with httpx.AsyncClient() as idle, httpx.AsyncClient() as during:
            assert (await idle.get(f"{base}/healthz")).status_code == 200  # now idle, kept alive
            started = trio.current_time()
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(5):  # until the instance has taken the signal: it drains
                while (r := await during.get(f"{base}/readyz")).status_code == 200:
                    await trio.sleep(0.05)
            assert r.status_code == 503 and r.headers.get("connection") == "close"  # still answered
            with trio.fail_after(10):
                await process.wait()
        assert process.returncode == 0
        assert trio.current_time() - started < 4  # drain 1 s + a little, not 20 s
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_a_bad_flag_is_reported_as_that_flag_with_the_commands_usage() -> None:
    result = subprocess.run([*NURSERY, "serve", "--port", "99999"], capture_output=True, text=True, env=_env())
    assert result.returncode == 2
    assert "nursery serve: error: argument --port: '99999' is not a port" in result.stderr
    assert "NURSERY_PORT" not in result.stderr
    for argv in (["serve", "--bogus"], ["cluster", "status", "--bogus"]):
        result = subprocess.run([*NURSERY, *argv], capture_output=True, text=True, env=_env())
        assert result.returncode == 2
        assert result.stderr.startswith(f"usage: nursery {' '.join(argv[:-1])} [-h]"), result.stderr
        assert "unrecognized arguments: --bogus" in result.stderr


def test_a_short_secret_key_is_refused_at_start_without_echoing_it(tmp_path: Path) -> None:
    result = subprocess.run([*NURSERY, "serve", "--data-dir", str(tmp_path)], capture_output=True, text=True,
                            env=_env(NURSERY_SECRET_KEY="abc"), timeout=30)
    assert result.returncode == 1
    assert result.stderr.startswith("nursery: NURSERY_SECRET_KEY (3 characters) is not valid: "
                                    "expected at least 32 characters"), result.stderr
    assert "abc" not in result.stderr
    assert not list(tmp_path.iterdir())  # refused before anything started
