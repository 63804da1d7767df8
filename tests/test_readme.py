"""The README's shell examples as a new user runs them, one after the other, against a real
instance: the curl walkthrough, then the GraphQL example (a second user: the walkthrough's is
taken), each answer what the README says it is."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import trio

from tests.harness import start_instance

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def shell_block(after_heading: str) -> str:
    """The first ```sh block after the heading."""
    section = README.split(after_heading, 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, after_heading
    return match.group(1)


def values(text: str) -> list[object]:
    """The JSON values curl printed one after the other (answers end without a newline)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        value, at = decoder.raw_decode(text, at)
        found.append(value)
    return found


async def run(script: str, url: str) -> list[object]:
    host = url.removeprefix("http://")
    script = script.replace("http://127.0.0.1:4000", url).replace("localhost:4000", host)
    result = await trio.run_process(["bash", "-euo", "pipefail", "-c", script],
                                    capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    return values(result.stdout.decode())


async def test_the_curl_walkthrough_then_the_graphql_example(database_url: str) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            instance = await start_instance(nursery, database_url)
            walk = await run(shell_block("## A walkthrough with curl"), instance.url)
            assert walk[0]["todo"]["title"] == "buy milk"  # type: ignore[index]
            assert walk[-4] == 204 and walk[-2] == 204  # the delete, the logout
            assert walk[-1]["error"]["code"] == "unauthenticated"  # type: ignore[index]

            graphql = await run(shell_block("## GraphQL"), instance.url)
            created, listed = graphql
            assert isinstance(created, dict) and isinstance(listed, dict)
            assert "errors" not in created and created["data"]["createTodo"]["title"] == "buy milk"
            assert listed["data"]["me"] == {"email": "grace@example.com"}
            assert [t["title"] for t in listed["data"]["todos"]["nodes"]] == ["buy milk"]

            # Run again, the one-liner says why it fails instead of a Python traceback.
            again = await trio.run_process(
                ["bash", "-c", shell_block("## GraphQL").replace("localhost:4000", instance.url[7:])],
                capture_stdout=True, capture_stderr=True, check=False)
            assert "Traceback" not in again.stderr.decode()
            assert "this email is already registered" in again.stderr.decode()
            instance.stop()
