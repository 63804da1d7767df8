"""Redis Cluster's slots: which slot a key or a command belongs to, and which master serves it.

    key_slot      the slot of a key: CRC16 of the key (or of its ``{hashtag}``) mod 16384
    command_slot  the slot of a command's key (argument 1; argument 3 for the script commands
                  when numkeys is not 0), or None for a command without a key
    Topology      which master serves which slot, as the cluster last said (``CLUSTER
                  SHARDS``; ``CLUSTER SLOTS`` before Redis 7), refreshed on demand from any
                  node it knows (seeds, masters, and replicas: a replica answers too)
    seed_urls     the nodes a URL names: one, or several separated by commas, so that a
                  process starting while one node is down still finds the cluster

``resp_cluster.ClusterClient`` routes by these.
"""

from __future__ import annotations

import binascii
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import trio

from nursery.logs import redact
from nursery.redis import resp

log = logging.getLogger(__name__)

SLOTS = 16384
_SCRIPT_COMMANDS = frozenset({b"EVAL", b"EVALSHA", b"EVAL_RO", b"EVALSHA_RO", b"FCALL", b"FCALL_RO"})



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


def seed_urls(url: str) -> list[str]:
    """``redis://a:7000/0,redis://b:7000/0`` → each node's URL (any one is enough to learn
    the rest while it answers). Raises ``ValueError`` for a URL that is not Redis's."""
    seeds = [part.strip() for part in url.split(",") if part.strip()]
    for seed in seeds:
        resp.Address.from_url(seed)
    return seeds


def command_slot(command: resp.Command) -> int | None:
    """The slot ``command`` must be sent to: its key's (argument 1; argument 3 for the script
    commands when numkeys is not 0); None for a command without a key (any master)."""
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
        self.replicas: list[str] = []  # URLs, as last learnt: asked too when refreshing

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
        candidates = list(dict.fromkeys([*self.masters, *self.replicas, *self._seeds]))
        answers: list[tuple[list[tuple[int, int, str]], list[str]]] = []
        failures: list[str] = []
        with trio.move_on_after(self._timeout):
            async with trio.open_nursery() as nursery:
                for url in candidates:
                    nursery.start_soon(self._ask, url, answers, failures, nursery.cancel_scope)
        if not answers:
            reasons = "; ".join(failures) or f"no answer within {self._timeout} s"
            raise resp.ConnectionLost(f"no Redis Cluster node told its slots: {reasons}")
        ranges, self.replicas = sorted(answers[0][0]), answers[0][1]
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

    async def _ask(self, url: str, answers: list[tuple[list[tuple[int, int, str]], list[str]]],
                   failures: list[str], done: trio.CancelScope) -> None:
        try:
            async with resp.Connection.open(url, timeout=self._timeout) as connection:
                ranges, replicas = await self._slot_map(connection, url)
        except resp.RECOVERABLE as exc:
            failures.append(f"{redact(url)}: {exc or type(exc).__name__}")
            return
        if not ranges:  # a node not (yet) part of a cluster: no answer
            failures.append(f"{redact(url)} serves no slots")
            return
        answers.append((ranges, replicas))
        done.cancel()

    async def _slot_map(self, connection: resp.Connection, url: str
                        ) -> tuple[list[tuple[int, int, str]], list[str]]:
        """The (first, last, master URL) ranges, and the replicas' URLs."""
        asked = resp.Address.from_url(url)

        def node(endpoint: bytes | None, port: int) -> str:
            # No endpoint, or "?": the node is reached at the address that was asked.
            host = endpoint.decode() if endpoint and endpoint != b"?" else asked.host
            return self.node_url(host, port)

        try:
            shards = await connection.call("CLUSTER", "SHARDS")
        except resp.ReplyError:  # before Redis 7: [[first, last, [host, port, id], replicas...]]
            return [(first, last, node(master[0], int(master[1])))
                    for first, last, master, *_ in await connection.call("CLUSTER", "SLOTS")], []
        ranges, replicas = [], []
        for shard in shards:
            fields = _pairs(shard)
            for member in map(_pairs, fields[b"nodes"]):
                port = member.get(b"tls-port") if asked.tls else None
                url_of_member = node(member.get(b"endpoint"), int(port or member[b"port"]))
                if member.get(b"role") != b"master":
                    replicas.append(url_of_member)
                    continue
                slots = fields[b"slots"]  # first, last, first, last...
                ranges += [(int(first), int(last), url_of_member)
                           for first, last in zip(slots[::2], slots[1::2], strict=True)]
        return ranges, replicas


def _pairs(flat: list[Any]) -> dict[bytes, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _describe_ranges(ranges: list[tuple[int, int, str]]) -> str:
    return ", ".join(f"{first}-{last} {redact(url)}" for first, last, url in ranges)

