"""Redis Cluster on ``resp``: each command goes to the master that serves its key's slot.

    key_slot           the slot of a key: CRC16 of the key (or of its ``{hashtag}``) mod 16384
    Topology           which master serves which slot, as the cluster last said (``CLUSTER
                       SHARDS``; ``CLUSTER SLOTS`` before Redis 7), refreshed on demand from
                       any node it knows
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

import binascii
import hashlib
import logging
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol
from urllib.parse import urlsplit

import trio

from nursery.pubsub import resp

log = logging.getLogger(__name__)

SLOTS = 16384
_SCRIPT_COMMANDS = frozenset({b"EVAL", b"EVALSHA", b"EVAL_RO", b"EVALSHA_RO", b"FCALL", b"FCALL_RO"})
# What asking a node for its slots may meet when the node is not there to answer.
_RECOVERABLE = (resp.RedisError, OSError, trio.TooSlowError)


class ShardUnavailable(resp.ConnectionLost):
    """Commands that could not be delivered. ``replies``: the reply to every command of the
    pipeline, in order; a failed command's is the ``resp.ConnectionLost`` it met, the others
    ran (``failed``: the positions of the failed ones)."""

    def __init__(self, message: str, replies: list[Any]) -> None:
        super().__init__(message)
        self.replies = replies
        self.failed = [i for i, reply in enumerate(replies) if isinstance(reply, resp.ConnectionLost)]


def key_slot(key: bytes | str) -> int:
    """The slot of ``key``, as Redis computes it: only the part between the first ``{`` and
    the first ``}`` after it counts, if that part is not empty (``{user:1}:todos`` and
    ``{user:1}:presence`` share a slot)."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1:end]
    return binascii.crc_hqx(data, 0) % SLOTS  # CRC16/XMODEM (polynomial 0x1021, initial 0)


def command_slot(command: resp.Command) -> int | None:
    """The slot ``command`` must be sent to (see Routing above); None: any master."""
    name = _as_bytes(command[0]).upper()
    position = 1
    if name in _SCRIPT_COMMANDS:
        try:
            numkeys = int(command[2]) if len(command) > 2 else 0
        except ValueError:
            return None  # not a number: any node will say so
        position = 3 if numkeys > 0 else len(command)
    return key_slot(_as_bytes(command[position])) if len(command) > position else None


def _as_bytes(value: bytes | str | int | float) -> bytes:
    """As ``hiredis.pack_command`` writes it on the wire."""
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else repr(value)).encode()


class Topology:
    """Which master serves which slot, as learnt from the cluster; empty until ``refresh``.
    Node URLs are made from the first seed's (scheme, credentials) and the addresses the
    cluster gives, so every node of the cluster is reached the same way as the seed."""

    def __init__(self, seeds: Sequence[str], *, timeout: float) -> None:
        if not seeds:
            raise ValueError("a Redis Cluster needs at least one seed URL")
        for url in seeds:
            resp.Address.from_url(url)  # refuse a bad URL now
        self._seeds = list(seeds)
        self._timeout = timeout
        self._owners: list[str | None] = [None] * SLOTS
        self.ranges: list[tuple[int, int, str]] = []  # (first, last, master URL), by first slot

    @property
    def masters(self) -> list[str]:
        """The URLs of the masters serving slots, in slot order."""
        return list(dict.fromkeys(url for _, _, url in self.ranges))

    def node_for(self, slot: int) -> str | None:
        """The URL of the master serving ``slot``; None if none did at the last refresh."""
        return self._owners[slot]

    def node_url(self, host: str, port: int) -> str:
        """The URL of the node at ``host:port``, with the first seed's scheme and login."""
        seed = urlsplit(self._seeds[0])
        login = seed.netloc.rpartition("@")[0]
        if ":" in host:  # IPv6
            host = f"[{host}]"
        return f"{seed.scheme}://{login + '@' if login else ''}{host}:{port}"

    async def refresh(self) -> None:
        """Ask every known master and every seed at once; the first complete answer replaces
        the slot map. Within ``timeout``; raises ``resp.ConnectionLost`` (the map unchanged)
        when none answers. Cancelling it leaves the map unchanged."""
        candidates = list(dict.fromkeys([*self.masters, *self._seeds]))
        answers: list[list[tuple[int, int, str]]] = []
        failures: list[str] = []
        with trio.move_on_after(self._timeout):
            async with trio.open_nursery() as nursery:
                for url in candidates:
                    nursery.start_soon(self._ask, url, answers, failures, nursery.cancel_scope)
        if not answers:
            reasons = "; ".join(failures) or f"no answer within {self._timeout} s"
            raise resp.ConnectionLost(f"no Redis Cluster node told its slots: {reasons}")
        ranges = sorted(answers[0])
        if self.ranges and ranges != self.ranges:
            log.info("Redis Cluster slots now: %s", _describe_ranges(ranges))
        owners: list[str | None] = [None] * SLOTS
        for first, last, url in ranges:
            owners[first:last + 1] = [url] * (last - first + 1)
        self.ranges, self._owners = ranges, owners

    def moved(self, slot: int, url: str) -> None:
        """Record what a ``-MOVED`` reply said: ``slot`` is served by ``url`` now."""
        self._owners[slot] = url
        ranges: list[tuple[int, int, str]] = []
        for index, owner in enumerate(self._owners):
            if owner is None:
                continue
            if ranges and ranges[-1][2] == owner and ranges[-1][1] == index - 1:
                ranges[-1] = (ranges[-1][0], index, owner)
            else:
                ranges.append((index, index, owner))
        self.ranges = ranges

    async def _ask(self, url: str, answers: list[list[tuple[int, int, str]]], failures: list[str],
                   done: trio.CancelScope) -> None:
        try:
            async with resp.Connection.open(url, timeout=self._timeout) as connection:
                ranges = await self._slot_map(connection, url)
        except _RECOVERABLE as exc:
            failures.append(f"{_where(url)}: {exc or type(exc).__name__}")
            return
        if not ranges:  # a node not (yet) part of a cluster: no answer
            failures.append(f"{_where(url)} serves no slots")
            return
        answers.append(ranges)
        done.cancel()

    async def _slot_map(self, connection: resp.Connection, url: str) -> list[tuple[int, int, str]]:
        asked = resp.Address.from_url(url)

        def node(endpoint: bytes | None, port: int) -> str:
            # No endpoint, or "?": the node is reached at the address that was asked.
            host = endpoint.decode() if endpoint and endpoint != b"?" else asked.host
            return self.node_url(host, port)

        try:
            shards = await connection.call("CLUSTER", "SHARDS")
        except resp.ReplyError:  # before Redis 7: [[first, last, [host, port, id], replicas...]]
            return [(first, last, node(master[0], int(master[1])))
                    for first, last, master, *_ in await connection.call("CLUSTER", "SLOTS")]
        ranges = []
        for shard in shards:
            fields = _pairs(shard)
            for member in map(_pairs, fields[b"nodes"]):
                if member.get(b"role") != b"master":
                    continue
                port = member.get(b"tls-port") if asked.tls else None
                url_of_master = node(member.get(b"endpoint"), int(port or member[b"port"]))
                slots = fields[b"slots"]  # first, last, first, last...
                ranges += [(int(first), int(last), url_of_master)
                           for first, last in zip(slots[::2], slots[1::2], strict=True)]
        return ranges


def _pairs(flat: list[Any]) -> dict[bytes, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _where(url: str) -> str:
    """host:port of ``url``, without credentials, for messages."""
    address = resp.Address.from_url(url)
    return f"{address.host}:{address.port}"


def _describe_ranges(ranges: list[tuple[int, int, str]]) -> str:
    return ", ".join(f"{first}-{last} {_where(url)}" for first, last, url in ranges)


class Commands(Protocol):
    """What ``resp.Client`` and ``ClusterClient`` both offer."""

    async def call(self, *args: bytes | str | int | float) -> Any: ...

    async def pipeline(self, commands: Sequence[resp.Command]) -> list[Any]: ...

    async def script(self, source: str, keys: Sequence[str], args: Sequence[int | str]) -> Any: ...


async def run_scripts(
    client: Commands, source: str, calls: Sequence[tuple[Sequence[str], Sequence[int | str]]]
) -> list[Any]:
    """Run the Lua script ``source`` once per ``(keys, args)`` of ``calls``, in one pipeline
    (one round trip per master): by its hash, then by its text for the calls whose node did
    not know it yet. The replies in order; a refused call's reply is its ``ReplyError``."""
    if not calls:
        await trio.lowlevel.checkpoint()
        return []
    sha = hashlib.sha1(source.encode()).hexdigest()
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


class ClusterClient:
    """Commands to a Redis Cluster; see the module docstring for routing and errors.

    Resource handling: one ``resp.Client`` per node addressed (opened on first use, its
    connection task in this client's nursery), all closed when ``open``'s block exits.
    ``timeout`` bounds each network wait as in ``resp``; a pipeline's parts wait at once,
    and a follow-up (MOVED, ASK, unreachable) adds one topology refresh and one more wait.
    Cancelling a call cancels every part of it: commands already written may have run."""

    def __init__(self, seed_url: str, timeout: float, nursery: trio.Nursery) -> None:
        self.topology = Topology([seed_url], timeout=timeout)
        self._timeout = timeout
        self._nursery = nursery
        self._clients: dict[str, resp.Client] = {}
        self._scripts: dict[str, bytes] = {}  # source → sha1
        self._refreshing: trio.Event | None = None  # set when the refresh under way ends
        self._refreshed_at: float | None = None  # when the latest refresh started (trio time)
        self._refresh_error = "not asked yet"

    @classmethod
    @asynccontextmanager
    async def open(cls, seed_url: str, *, timeout: float) -> AsyncIterator[ClusterClient]:
        """Nothing is contacted before the first command (which learns the topology from
        ``seed_url``); every connection closes on exit."""
        async with trio.open_nursery() as nursery:
            try:
                yield cls(seed_url, timeout, nursery)
            finally:
                nursery.cancel_scope.cancel()

    async def call(self, *args: bytes | str | int | float) -> Any:
        """The reply to one command; ``ReplyError`` if Redis refused it, ``ShardUnavailable``
        if it could not be delivered."""
        (reply,) = await self.pipeline([args])
        if isinstance(reply, resp.ReplyError):
            raise reply
        return reply

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

    async def script(self, source: str, keys: Sequence[str], args: Sequence[int | str]) -> Any:
        """Run a Lua script on the master of its keys (all in one slot): by its hash, and by
        its text the first time that node needs it."""
        sha = self._scripts.get(source)
        if sha is None:
            sha = self._scripts[source] = hashlib.sha1(source.encode()).hexdigest().encode()
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except resp.ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self.call("EVAL", source, len(keys), *keys, *args)

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
            failure = resp.ConnectionLost(f"{_where(url)}: {exc}")
            unreachable.update(index for index, _ in items)
        except trio.TooSlowError:
            failure = resp.ConnectionLost(f"no reply from {_where(url)} within {self._timeout} s")
        else:
            for index, asking in items:
                if asking:
                    next(answers)  # ASKING's +OK
                reply = next(answers)
                if isinstance(reply, resp.ReplyError) and str(reply).startswith("CLUSTERDOWN"):
                    reply = resp.ConnectionLost(f"{_where(url)}: {reply}")
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
