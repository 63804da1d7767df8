"""Connecting to whichever of several PostgreSQL hosts is the primary (asyncio side).

``postgresql://user@h1:5432,h2:5432/db?target_session_attrs=read-write`` names every node of a
replicated database; only the read-write one will do. asyncpg understands such a URL but tries
the hosts one after the other under one timeout, so a host that accepts TCP and then says
nothing (a hung machine: its kernel still completes the handshake) stalls every new
connection until the timeout, even while another host is a healthy primary. Here the hosts are
tried at once, each with its own ``connect_timeout``, and the first that asyncpg accepts
(read-write, when the URL asks for it) wins; the others are closed.

A URL with one host is handed to asyncpg unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def split_hosts(url: str) -> list[str]:
    """One URL per host of ``url`` (the same user, database and query); ``[url]`` if it
    names one host."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    names = [h for h in hosts.split(",") if h]
    if len(names) <= 1:
        return [url]
    return [urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}")) for host in names]


def primary_connector(url: str, connect_timeout: float) -> Any:
    """A ``connect`` for ``asyncpg.create_pool`` that races the hosts of ``url``."""
    urls = split_hosts(url)

    async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
        kwargs.pop("loop", None)
        kwargs["timeout"] = connect_timeout
        if len(urls) == 1:
            return await asyncpg.connect(dsn, **kwargs)
        return await _first_accepted(urls, kwargs)

    return connect


async def _first_accepted(urls: list[str], kwargs: dict[str, Any]) -> asyncpg.Connection:
    pending = {asyncio.ensure_future(asyncpg.connect(u, **kwargs)) for u in urls}
    errors: list[BaseException] = []
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            winners = [t for t in done if t.exception() is None]
            errors.extend(e for t in done if (e := t.exception()) is not None)
            if winners:
                for extra in winners[1:]:  # both answered in one step: keep one
                    extra.result().terminate()
                return winners[0].result()
    finally:
        for task in pending:  # not awaited: a hung host must not hold up the winner
            task.cancel()
            task.add_done_callback(_close_if_connected)
    # Prefer the most telling error: a refusal by a live server over a timeout.
    raise next((e for e in errors if not isinstance(e, (asyncio.TimeoutError, OSError))),
               errors[0] if errors else asyncpg.InterfaceError("no host to connect to"))


def _close_if_connected(task: asyncio.Future[asyncpg.Connection]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().terminate()
