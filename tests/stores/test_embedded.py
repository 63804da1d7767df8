"""The private PostgreSQL of the embedded default, against real servers (no mocks).

Most tests share one cluster initialised once per module (initdb costs ~1 s; a restart on an
existing data dir ~0.15 s); each leaves it stopped.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trio

from nursery.errors import StoreUnavailable
from nursery.stores.asyncio_thread import AsyncioThread, open_asyncio_thread
from nursery.stores.embedded import PrivatePostgres, free_port, open_private_postgres


def make_dir() -> Path:
    # mkdtemp's 0700 exercises making the path traversable for the `postgres` user when
    # root. On RAM when possible: initdb there takes ~1 s instead of 2-6 s on a busy disk.
    ram = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="nursery-test-embedded-", dir=ram))


@pytest.fixture
def data_dir() -> Iterator[Path]:
    directory = make_dir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster_dir() -> Iterator[Path]:
    directory = make_dir()
    with PrivatePostgres(directory, fast=True):
        pass  # initdb + first start, then stopped
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


async def fetchval(aio: AsyncioThread, url: str, sql: str) -> Any:
    """One query on a fresh asyncpg connection."""
    conn = await aio.run(asyncpg.connect, url, timeout=5)
    try:
        return await aio.run(conn.fetchval, sql)
    finally:
        await aio.run(conn.close, timeout=5)


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


async def test_first_start_initialises_and_serves(data_dir: Path) -> None:
    with trio.fail_after(30):
        async with open_asyncio_thread() as aio:
            async with open_private_postgres(data_dir, fast=True) as url:
                assert url.startswith("postgresql://nursery@127.0.0.1:")
                assert url.endswith("/nursery")
                assert await fetchval(aio, url, "SELECT current_database()") == "nursery"
                assert await fetchval(aio, url, "SHOW fsync") == "off"
    assert not accepts(port_of(url))
    assert not (data_dir / "pg" / "postmaster.pid").exists()


async def test_restart_reuses_data(cluster_dir: Path) -> None:
    port = free_port()
    with trio.fail_after(30):
        async with open_asyncio_thread() as aio:
            async with open_private_postgres(cluster_dir, port=port, fast=True) as url:
                await fetchval(aio, url, "CREATE TABLE kept AS SELECT 42 AS answer")
            async with open_private_postgres(cluster_dir, port=port, fast=True) as again:
                assert again == url
                assert await fetchval(aio, url, "SELECT answer FROM kept") == 42
                await fetchval(aio, url, "DROP TABLE kept")


async def test_cancellation_stops_the_server(cluster_dir: Path) -> None:
    with trio.fail_after(30):
        with trio.CancelScope() as scope:
            async with open_private_postgres(cluster_dir, fast=True) as url:
                assert accepts(port_of(url))
                scope.cancel()
                await trio.sleep_forever()
    assert not accepts(port_of(url))


async def test_port_taken_is_store_unavailable_with_log(cluster_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with trio.fail_after(30), pytest.raises(StoreUnavailable) as caught:
            async with open_private_postgres(cluster_dir, port=port, fast=True):
                pytest.fail("started on a taken port")
    assert "did not start" in caught.value.message
    assert "Address already in use" in caught.value.message  # from the server log tail
    assert not (cluster_dir / "pg" / "postmaster.pid").exists()


async def test_second_server_on_same_dir_is_refused_and_first_survives(
    cluster_dir: Path,
) -> None:
    with trio.fail_after(30):
        async with open_asyncio_thread() as aio:
            async with open_private_postgres(cluster_dir, fast=True) as url:
                with pytest.raises(StoreUnavailable, match="already running"):
                    await trio.to_thread.run_sync(PrivatePostgres(cluster_dir).start)
                assert await fetchval(aio, url, "SELECT 1") == 1


def test_missing_binaries_are_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NURSERY_PG_BIN", str(tmp_path))
    with pytest.raises(StoreUnavailable, match="NURSERY_PG_BIN"):
        PrivatePostgres(tmp_path / "data").start()


def _modes(path: Path) -> dict[Path, int]:
    return {p: p.stat().st_mode for p in path.resolve().parents}


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to the postgres user")
def test_as_root_nothing_above_the_data_dir_changes_mode(data_dir: Path) -> None:
    """A data dir under a directory the server's user cannot traverse (here a 0700 mkdtemp,
    like /root) is refused with that directory named and a way out, and nothing changes mode;
    a data dir it can reach starts, and only the data dir itself gains the search bit."""
    assert data_dir.stat().st_mode & 0o777 == 0o700
    closed = data_dir / "data"
    before = _modes(closed)
    with pytest.raises(StoreUnavailable) as caught:
        PrivatePostgres(closed, fast=True).start()
    assert f"cannot reach {closed}: {data_dir} is mode 0700" in caught.value.message
    assert "--data-dir /var/tmp/nursery" in caught.value.message
    assert _modes(closed) == before
    assert not (closed / "pg").exists()

    before = _modes(data_dir)
    with PrivatePostgres(data_dir, fast=True):
        pass
    assert _modes(data_dir) == before
    assert data_dir.stat().st_mode & 0o777 == 0o701  # the search bit for "other" (postgres)
