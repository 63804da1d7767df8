"""``nursery watch`` as a user meets it in a terminal: Ctrl-C and Ctrl-D at the prompts, a server
that is down at the start, and one that goes away while watching. One line each, no traceback."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import time

import httpx
import pytest
import trio

from nursery.client import ClientConfig
from nursery.watch import watch
from tests.harness import register, start_instance
from tests.servers import free_port

NURSERY = [sys.executable, "-m", "nursery"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("NURSERY_")}


def _read_until(fd: int, text: str, timeout: float = 20) -> str:
    """What the terminal showed, once it shows ``text`` (the prompt)."""
    seen, deadline = b"", time.monotonic() + timeout
    while text.encode() not in seen:
        assert time.monotonic() < deadline, f"no {text!r} on the terminal: {seen!r}"
        try:
            seen += os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
    return seen.decode(errors="replace")


def _at_the_prompt(prompt: str, keys: bytes, *flags: str) -> tuple[int, str]:
    """Run ``nursery watch`` on a pseudo-terminal (its controlling terminal, as in a shell),
    type ``keys`` at ``prompt``; the exit status and everything the terminal showed."""
    master, slave = pty.openpty()
    # setsid -c: a session of its own with this terminal as the controlling one, so that
    # getpass reads /dev/tty and Ctrl-C is the terminal's SIGINT, not a signal we send.
    process = subprocess.Popen(["setsid", "-c", *NURSERY, "watch", "--url", "http://127.0.0.1:9", *flags],
                               stdin=slave, stdout=slave, stderr=slave, env=_env())
    os.close(slave)
    try:
        shown = _read_until(master, prompt)
        os.write(master, keys)
        status = process.wait(timeout=20)
        shown += _read_until(master, "\x00", timeout=5)  # the rest, up to EOF
    finally:
        process.kill()
        os.close(master)
    return status, shown


@pytest.mark.parametrize("prompt, flags", [("email: ", ()), ("password: ", ("--email", "ada@example.com"))])
def test_ctrl_c_at_a_prompt_exits_130_without_a_traceback(prompt: str, flags: tuple[str, ...]) -> None:
    status, shown = _at_the_prompt(prompt, b"\x03", *flags)
    assert status == 130, shown
    assert "Traceback" not in shown and "KeyboardInterrupt" not in shown
    assert "nursery watch: interrupted" in shown


@pytest.mark.parametrize("prompt, flags", [("email: ", ()), ("password: ", ("--email", "ada@example.com"))])
def test_ctrl_d_at_a_prompt_exits_1_with_one_line(prompt: str, flags: tuple[str, ...]) -> None:
    status, shown = _at_the_prompt(prompt, b"\x04", *flags)
    assert status == 1, shown
    assert "Traceback" not in shown and "EOFError" not in shown
    assert "nursery watch: no input" in shown


def test_a_server_that_is_down_is_named_with_the_reason() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run([*NURSERY, "watch", "--url", url, "--email", "a@b.io", "--password", "x" * 12],
                            capture_output=True, text=True, env=_env(), timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip() == f"nursery watch: cannot reach {url}: connection refused"
    assert "Traceback" not in result.stderr


async def test_a_server_that_goes_away_is_named_in_the_disconnected_lines(database_url: str) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
            a = await start_instance(nursery, database_url)
            user = await register(http, a.url)
            out = io.StringIO()
            quick = ClientConfig(backoff_initial=0.05, backoff_max=0.2, restart_jitter=0.05)
            nursery.start_soon(lambda: watch(a.url, user.email, user.password, out, config=quick))
            with trio.fail_after(10):
                while f"connected to {a.name}" not in out.getvalue():
                    await trio.sleep(0.02)
            a.stop()
            ws = a.url.replace("http://", "ws://") + "/ws"
            with trio.fail_after(20):
                while f"(cannot connect to {ws}: connection refused)" not in out.getvalue():
                    await trio.sleep(0.02)
            assert "HandshakeError" not in out.getvalue()
            nursery.cancel_scope.cancel()

