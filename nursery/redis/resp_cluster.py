"""Redis Cluster on ``resp``: each command goes to the master that serves its key's slot.

    key_slot, Topology the slots and who serves them (``resp_slots``, re-exported here)
    ClusterClient      ``resp.Client``'s methods (``call``, ``pipeline``, ``script``) over one
                       ``resp.Client`` per master: a pipeline is split per master, the parts
                       sent at once, the replies put back in the caller's order
    open_redis_client  a ``ClusterClient`` or a ``resp.Client`` (both ``Commands``), by a flag
    run_scripts        one Lua script run for many key sets in one pipeline, on either client

Routing: a command's key is its argument 1 (``GET key``, ``SPUBLISH channel``); for the
script commands (EVAL, EVALSHA, their _RO forms, FCALL) it is argument 3 when numkeys
(argument 2) is not 0. A command without a key (``PING``, a script with no keys) goes to any
master. Keys of one command in different slots are the caller's bug: Redis refuses the
command (``CROSSSLOT``), and the caller gets that ``ReplyError`` as it is.

Sharded pub/sub: SPUBLISH is routed by its channel like any key; a subscriber is a
``resp.Subscriber(..., sharded=True)`` on ``topology.node_for(key_slot(channel))``, the
channel's master (its owner sends it ``sunsubscribe`` when the slot moves away).

Redirections and failures; each command is followed up at most once:

    -MOVED slot host:port   the slot has another owner: the topology takes note (and is
                            refreshed, for other slots that moved with it) and the command is
                            sent again to the node named
    -ASK slot host:port     the slot is migrating and the key is already on the node named:
                            ASKING, then the command, there (the topology stays as it is)
    node unreachable        refused or reset (``resp.Client`` has already tried a new
                            connection): the topology is refreshed, the command sent again
                            to its slot's master
    node silent             no reply within ``timeout``: not sent again (it may have run; a
                            second wait would double the delay)
    -CLUSTERDOWN            the node does not serve its slots right now (restarting, cut
                            off): not sent again

Errors (``resp``'s, plus one)::

    resp.RedisError
     ├── resp.ConnectionLost
     │    └── ShardUnavailable   commands that could not be delivered: unreachable, silent or
     │                           CLUSTERDOWN after their follow-up; raised by ``call``, and by
     │                           ``pipeline`` once every other command of it has run
     └── resp.ReplyError         Redis refused a command (returned in a pipeline, raised by call)

``call``/``pipeline`` raise ``resp.ConnectionLost`` when the topology cannot be learnt at all
(no node answers). Callers map all of these, like ``resp``'s, to ``BrokerUnavailable``.
A command sent again after a lost connection may run twice (as with ``resp.Client``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio

from nursery.logs import redact
from nursery.redis import resp
from nursery.redis.resp import Commands
from nursery.redis.resp_slots import Topology, command_slot, key_slot, seed_urls

__all__ = ["ClusterClient", "Commands", "ShardUnavailable", "Topology", "key_slot",
           "open_redis_client", "run_scripts"]

log = logging.getLogger(__name__)


class ShardUnavailable(resp.ConnectionLost):
    """Commands that could not be delivered. ``replies``: the reply to every command of the
    pipeline, in order; a failed command's is the ``resp.ConnectionLost`` it met, the others
    ran (``failed``: the positions of the failed ones)."""

    def __init__(self, message: str, replies: list[Any]) -> None:
        super().__init__(message)
        self.replies = replies
        self.failed = [i for i, reply in enumerate(replies) if isinstance(reply, resp.ConnectionLost)]



async def run_scripts(
    client: Commands, source: str, calls: Sequence[tuple[Sequence[str], Sequence[int | str]]]
) -> list[Any]:
    """Run the Lua script ``source`` once per ``(keys, args)`` of ``calls``, in one pipeline
    (one round trip per master): by its hash, then by its text for the calls whose node did
    not know it yet. The replies in order; a refused call's reply is its ``ReplyError``."""
    if not calls:
        await trio.lowlevel.checkpoint()
        return []
    sha = resp.script_sha(source)
    replies = await client.pipeline([("EVALSHA", sha, len(keys), *keys, *args) for keys, args in calls])
    unknown = [i for i, reply in enumerate(replies)
               if isinstance(reply, resp.ReplyError) and str(reply).startswith("NOSCRIPT")]
    if unknown:
        loaded = await client.pipeline([("EVAL", source, len(calls[i][0]), *calls[i][0], *calls[i][1])
                                        for i in unknown])
        for i, reply in zip(unknown, loaded, strict=True):
            replies[i] = reply
    return replies


def open_redis_client(url: str, *, timeout: float, cluster: bool) -> AbstractAsyncContextManager[Commands]:
    """``ClusterClient.open(url)`` (``url``: any node of the cluster) when ``cluster``, else
    ``resp.Client.open(url)``: either way nothing is contacted before the first command, and
    the connections close on exit."""
    if cluster:
        return ClusterClient.open(url, timeout=timeout)
    return resp.Client.open(url, timeout=timeout)


class ClusterClient(Commands):
    """Commands to a Redis Cluster; see the module docstring for routing and errors.

    Resource handling: one ``resp.Client`` per node addressed (opened on first use, its
    connection task in this client's nursery), all closed when ``open``'s block exits.
    ``timeout`` bounds each network wait as in ``resp``; a pipeline's parts wait at once,
    and a follow-up (MOVED, ASK, unreachable) adds one topology refresh and one more wait.
    Cancelling a call cancels every part of it: commands already written may have run."""

    def __init__(self, seed_url: str, timeout: float, nursery: trio.Nursery) -> None:
        self.topology = Topology(seed_urls(seed_url), timeout=timeout)
        self._timeout = timeout
        self._nursery = nursery
        self._clients: dict[str, resp.Client] = {}
        self._refreshing: trio.Event | None = None  # set when the refresh under way ends
        self._refreshed_at: float | None = None  # when the latest refresh started (trio time)
        self._refresh_error = "not asked yet"

    @classmethod
    @asynccontextmanager
    async def open(cls, seed_url: str, *, timeout: float) -> AsyncIterator[ClusterClient]:
        """Nothing is contacted before the first command (which learns the topology from
        ``seed_url``: one node, or several separated by commas); every connection closes on
        exit."""
        async with trio.open_nursery() as nursery:
            try:
                yield cls(seed_url, timeout, nursery)
            finally:
                nursery.cancel_scope.cancel()

    async def pipeline(self, commands: Sequence[resp.Command]) -> list[Any]:
        """The replies to ``commands``, in their order; a refused command's reply is its
        ``ReplyError``. Raises ``ShardUnavailable`` (after the others ran) if any could not
        be delivered. Commands for one master run in the caller's order (so do those for one
        slot, followed up together); the masters' parts run concurrently."""
        if not commands:
            await trio.lowlevel.checkpoint()
            return []
        began = trio.current_time()
        if not self.topology.ranges:
            await self._refresh(since=began)
            if not self.topology.ranges:
                raise resp.ConnectionLost(f"cannot learn the Redis Cluster's slots: {self._refresh_error}")
        replies: list[Any] = [None] * len(commands)
        unreachable: set[int] = set()
        first = [(i, self._owner(command), False) for i, command in enumerate(commands)]
        await self._send(commands, first, replies, unreachable)
        again: list[tuple[int, str | None, bool]] = []
        refresh = bool(unreachable)
        for index, url, _ in first:
            reply = replies[index]
            if isinstance(reply, resp.ReplyError) and (redirect := _redirect(reply)) is not None:
                assert url is not None  # a node answered
                kind, slot, host, port = redirect
                target = self.topology.node_url(host or resp.Address.from_url(url).host, port)
                again.append((index, target, kind == "ASK"))
                if kind == "MOVED":  # the reply is the authority on its slot; a refresh, on the others
                    self.topology.moved(slot, target)
                    refresh = True
        if refresh:
            await self._refresh(since=began)
        again += [(index, self._owner(commands[index]), False) for index in sorted(unreachable)]
        if again:
            await self._send(commands, again, replies, set())
        failed = [reply for reply in replies if isinstance(reply, resp.ConnectionLost)]
        if failed:
            raise ShardUnavailable(
                f"{len(failed)} of {len(commands)} Redis Cluster command(s) not delivered: {failed[0]}",
                replies)
        return replies

    def _owner(self, command: resp.Command) -> str | None:
        slot = command_slot(command)
        if slot is not None:
            return self.topology.node_for(slot)
        masters = self.topology.masters
        return random.choice(masters) if masters else None

    async def _send(self, commands: Sequence[resp.Command], sends: list[tuple[int, str | None, bool]],
                    replies: list[Any], unreachable: set[int]) -> None:
        """Each ``(index, node URL, asking)`` of ``sends``: ``commands[index]`` sent to that
        node (after ASKING if ``asking``), one pipeline per node, all at once; its reply (or
        the ``ConnectionLost`` it met) into ``replies[index]``; the indexes whose node could
        not be reached into ``unreachable``."""
        by_node: dict[str, list[tuple[int, bool]]] = {}
        for index, url, asking in sends:
            if url is None:
                replies[index] = resp.ConnectionLost(
                    f"no master serves the slot of {commands[index][0]!r} ({self._refresh_error})")
            else:
                by_node.setdefault(url, []).append((index, asking))
        async with trio.open_nursery() as nursery:
            for url, items in by_node.items():
                nursery.start_soon(self._send_to, url, commands, items, replies, unreachable)

    async def _send_to(self, url: str, commands: Sequence[resp.Command], items: list[tuple[int, bool]],
                       replies: list[Any], unreachable: set[int]) -> None:
        wire: list[resp.Command] = []
        for index, asking in items:
            if asking:
                wire.append(("ASKING",))
            wire.append(commands[index])
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = resp.Client(url, self._timeout, self._nursery)
        try:
            answers = iter(await client.pipeline(wire))
        except resp.ConnectionLost as exc:
            failure = resp.ConnectionLost(f"{redact(url)}: {exc}")
            unreachable.update(index for index, _ in items)
        except trio.TooSlowError:
            failure = resp.ConnectionLost(f"no reply from {redact(url)} within {self._timeout} s")
        else:
            for index, asking in items:
                if asking:
                    next(answers)  # ASKING's +OK
                reply = next(answers)
                if isinstance(reply, resp.ReplyError) and str(reply).startswith("CLUSTERDOWN"):
                    reply = resp.ConnectionLost(f"{redact(url)}: {reply}")
                replies[index] = reply
            return
        for index, _ in items:
            replies[index] = failure

    async def _refresh(self, since: float) -> None:
        """The topology refreshed by a refresh that started at ``since`` or later: one is
        started unless such a one is under way (then the caller waits for it) or done, so
        callers that met the same change at once share one. A refresh that fails keeps the
        topology (its reason in ``_refresh_error``)."""
        while self._refreshing is not None:
            await self._refreshing.wait()
        if self._refreshed_at is not None and self._refreshed_at >= since:
            return
        self._refreshing, self._refreshed_at = trio.Event(), trio.current_time()
        try:
            await self.topology.refresh()
        except resp.ConnectionLost as exc:
            self._refresh_error = str(exc)
            log.info("%s", exc)
        finally:
            self._refreshing.set()
            self._refreshing = None


def _redirect(reply: resp.ReplyError) -> tuple[str, int, str, int] | None:
    """("MOVED" or "ASK", slot, host, port) of a redirection (host empty: the node that
    answered); None for any other error."""
    kind, _, rest = str(reply).partition(" ")
    if kind not in ("MOVED", "ASK"):
        return None
    slot, _, address = rest.partition(" ")
    host, _, port = address.rpartition(":")
    return kind, int(slot), host.strip("[]"), int(port)
