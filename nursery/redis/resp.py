"""A small Redis client on Trio: RESP2 over TCP or TLS, commands packed and replies parsed by
hiredis (the C parser redis-py itself uses when it is installed).

nursery asks little of Redis: PUBLISH (many, pipelined), one connection in subscribe mode, and
a few commands and Lua scripts for presence and rate limits. This client does that much on
Trio's own streams, so no asyncio loop has to run under Trio to reach Redis
(bench/README.md: the bridge was most of Redis's cost).

    Connection  one connection. Callers' commands are written in the order they are made and
                their replies matched in that order by the connection's reader task: many
                callers share one connection, their commands pipelined.
    Client      a Connection that is opened when first needed and again after it was lost;
                Lua scripts by EVALSHA, with EVAL when Redis does not know the script yet.
    Subscriber  a connection in (S)SUBSCRIBE mode, read by its one owner.

Errors: ``ConnectionLost`` (the connection is unusable: closed, reset, timed out, refused)
and ``ReplyError`` (Redis answered with an error) are ``RedisError``s; a reply that does not
come within ``timeout`` raises ``trio.TooSlowError`` and breaks the connection (its state is
unknown). ``RECOVERABLE`` names them all; callers translate them into their own errors with
``translated`` (the brokers into ``BrokerUnavailable``, the rate limiter into
``RateLimiterUnavailable``).
"""

from __future__ import annotations

import functools
import hashlib
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
import trio

Command = Sequence[bytes | str | int | float]
RECEIVE_SIZE = 65536


class RedisError(Exception):
    pass


class ConnectionLost(RedisError):
    """The connection cannot be used any more."""


class ReplyError(RedisError):
    """Redis refused a command (``-ERR ...``)."""


# What a lost or unreachable server looks like from here. Anything else is a bug: re-raised.
RECOVERABLE: tuple[type[BaseException], ...] = (RedisError, OSError, trio.TooSlowError)


def reason(exc: BaseException) -> str:
    """A short, credential-free account of a failure, for logs and error messages."""
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


async def translated[T](call: Awaitable[T], error: Callable[[str], Exception], what: str) -> T:
    """``call`` (bounded by the client's own timeout); a lost, unreachable or silent Redis
    becomes ``error("redis <what> failed: <reason>")``, the caller's own exception."""
    try:
        return await call
    except RECOVERABLE as exc:
        raise error(f"redis {what} failed: {reason(exc)}") from exc


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def from_url(cls, url: str) -> Address:
        """``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a Redis URL: {parts.scheme}://...")
        db = parts.path.strip("/")
        return cls(
            parts.hostname or "127.0.0.1", parts.port or 6379, int(db) if db else 0,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
            parts.scheme == "rediss",
        )


def pack(*args: bytes | str | int | float) -> bytes:
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]
    return packed


def _reader() -> hiredis.Reader:
    return hiredis.Reader(replyError=ReplyError)


async def _open_stream(address: Address, timeout: float) -> trio.abc.Stream:
    """Connected (and, for Redis with a password or a database, logged in) within ``timeout``."""
    try:
        with trio.fail_after(timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(address.host, address.port)
            try:
                if address.tls:
                    tls = trio.SSLStream(stream, ssl.create_default_context(),
                                         server_hostname=address.host)
                    await tls.do_handshake()
                    stream = tls
                await _hello(stream, address)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
            return stream
    except trio.TooSlowError:
        raise ConnectionLost(f"no connection to {address.host}:{address.port} in {timeout} s") from None
    except (OSError, trio.BrokenResourceError) as exc:
        raise ConnectionLost(f"cannot connect to {address.host}:{address.port}: {exc}") from exc


async def _hello(stream: trio.abc.Stream, address: Address) -> None:
    commands = []
    if address.password is not None:
        commands.append(pack("AUTH", *filter(None, (address.username, address.password))))
    if address.db:
        commands.append(pack("SELECT", address.db))
    if not commands:
        return
    await stream.send_all(b"".join(commands))
    reader = _reader()
    for _ in commands:
        reply = reader.gets()
        while reply is False:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise ConnectionLost("Redis closed the connection while logging in")
            reader.feed(data)  # type: ignore[arg-type]  # any buffer works
            reply = reader.gets()
        if isinstance(reply, ReplyError):
            raise ConnectionLost(f"Redis refused the login: {reply}")


class _Replies:
    """The replies to one pipeline, filled in by the reader; ``done`` once all are there."""

    __slots__ = ("values", "done")

    def __init__(self, count: int) -> None:
        self.values: list[Any] = [None] * count
        self.done = trio.Event()

    def fill(self, index: int, value: Any) -> None:
        self.values[index] = value
        if index == len(self.values) - 1:
            self.done.set()


class Commands:
    """What every client here offers on top of its ``pipeline``: one command (``call``) and a
    Lua script (``script``), the same way for a connection, a client and a cluster client."""

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """The replies to ``commands`` in their order; a refused command's is its ``ReplyError``."""
        raise NotImplementedError

    async def call(self, *args: bytes | str | int | float) -> Any:
        """The reply to one command (``ReplyError`` if Redis refused it)."""
        (reply,) = await self.pipeline([args])
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def script(self, source: str, keys: Sequence[str], args: Sequence[int | str]) -> Any:
        """Run a Lua script (on a cluster, its keys in one slot): by its hash, and by its text
        the first time the node needs it."""
        try:
            return await self.call("EVALSHA", script_sha(source), len(keys), *keys, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self.call("EVAL", source, len(keys), *keys, *args)


@functools.cache
def script_sha(source: str) -> str:
    """The SHA1 Redis knows a script by (EVALSHA)."""
    return hashlib.sha1(source.encode()).hexdigest()


class Connection(Commands):
    """One connection to Redis, shared by any number of callers. Open it with ``open``."""

    def __init__(self, stream: trio.abc.Stream, timeout: float) -> None:
        self._stream = stream
        self._timeout = timeout
        self._waiting: deque[tuple[_Replies, int]] = deque()  # the replies due, in order
        self._writing = trio.Lock()
        self.lost: ConnectionLost | None = None
        self.closed = trio.Event()

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, *, timeout: float) -> AsyncIterator[Connection]:
        """Connected, with its reader task; closed on exit (and the task ended)."""
        stream = await _open_stream(Address.from_url(url), timeout)
        connection = cls(stream, timeout)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(connection._read_replies)
                try:
                    yield connection
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            connection._fail(ConnectionLost("the connection was closed"))
            await trio.aclose_forcefully(stream)

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """The replies to ``commands``, sent in one write; a refused command's reply is its
        ``ReplyError`` (returned, not raised: the others still ran)."""
        if self.lost is not None:
            raise self.lost
        data = b"".join(hiredis.pack_command(tuple(c)) for c in commands)  # type: ignore[arg-type]
        replies = _Replies(len(commands))
        deadline = trio.current_time() + self._timeout
        try:
            async with self._writing:
                self._waiting.extend((replies, i) for i in range(len(commands)))
                # A write cut short would leave half a command on the wire: the caller's
                # cancellation does not stop it, only the deadline (which loses the connection).
                with trio.CancelScope(deadline=deadline, shield=True) as writing:
                    await self._stream.send_all(data)
                if writing.cancelled_caught:
                    raise trio.TooSlowError
            with trio.CancelScope(deadline=deadline) as waiting:
                await replies.done.wait()
            if waiting.cancelled_caught:
                raise trio.TooSlowError
        except trio.TooSlowError:
            self._fail(ConnectionLost(f"no reply from Redis within {self._timeout} s"))
            raise
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._fail(ConnectionLost(f"the connection to Redis broke: {exc}"))
            raise self.lost from exc  # type: ignore[misc]
        for value in replies.values:
            if isinstance(value, ConnectionLost):
                raise value
        return replies.values

    async def _read_replies(self) -> None:
        reader = _reader()
        try:
            while True:
                data = await self._stream.receive_some(RECEIVE_SIZE)
                if not data:
                    raise ConnectionLost("Redis closed the connection")
                reader.feed(data)  # type: ignore[arg-type]  # any buffer works
                while (value := reader.gets()) is not False:
                    if not self._waiting:
                        raise ConnectionLost("a reply nobody asked for")
                    replies, index = self._waiting.popleft()
                    replies.fill(index, value)
        except ConnectionLost as exc:
            self._fail(exc)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, hiredis.ProtocolError) as exc:
            self._fail(ConnectionLost(f"the connection to Redis broke: {exc}"))

    def _fail(self, error: ConnectionLost) -> None:
        """Mark the connection lost: every waiting caller gets ``error``."""
        if self.lost is None:
            self.lost = error
        while self._waiting:
            replies, index = self._waiting.popleft()
            replies.fill(index, self.lost)
        self.closed.set()


class Client(Commands):
    """Commands to one Redis, over one pipelined ``Connection`` that is (re)opened on demand.
    A command that meets a connection lost since its last use is sent once more on a new
    one (a PUBLISH may then arrive twice: subscribers drop duplicates by revision)."""

    def __init__(self, url: str, timeout: float, nursery: trio.Nursery) -> None:
        Address.from_url(url)  # refuse a bad URL now
        self._url = url
        self._timeout = timeout
        self._nursery = nursery
        self._current: Connection | None = None
        self._connecting = trio.Lock()

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, *, timeout: float) -> AsyncIterator[Client]:
        """Nothing is contacted before the first command; its connection closes on exit."""
        async with trio.open_nursery() as nursery:
            try:
                yield cls(url, timeout, nursery)
            finally:
                nursery.cancel_scope.cancel()

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        try:
            return await (await self._connection()).pipeline(commands)
        except ConnectionLost:
            return await (await self._connection()).pipeline(commands)  # once, on a new one

    async def _connection(self) -> Connection:
        async with self._connecting:
            if self._current is None or self._current.lost is not None:
                self._current = await self._nursery.start(self._hold)
            return self._current

    async def _hold(self, *, task_status: trio.TaskStatus[Connection]) -> None:
        async with Connection.open(self._url, timeout=self._timeout) as connection:
            task_status.started(connection)
            await connection.closed.wait()


class Subscriber:
    """A connection in subscribe mode: ``SUBSCRIBE`` (or ``SSUBSCRIBE``, sharded) channels,
    then read what is published to them. One task reads it (no reader task of its own)."""

    def __init__(self, stream: trio.abc.Stream, timeout: float, sharded: bool) -> None:
        self._stream = stream
        self._timeout = timeout
        self._reader = _reader()
        self._kind = b"smessage" if sharded else b"message"
        self._subscribe = b"SSUBSCRIBE" if sharded else b"SUBSCRIBE"
        self._unsubscribe = b"SUNSUBSCRIBE" if sharded else b"UNSUBSCRIBE"
        self.channels: set[bytes] = set()  # confirmed by Redis
        self._confirmations: list[tuple[bytes, bool]] = []  # (channel, subscribed), in order

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str, channels: Sequence[bytes], *, timeout: float, sharded: bool = False
    ) -> AsyncIterator[Subscriber]:
        """Subscribed to ``channels`` (confirmed) within ``timeout``; closed on exit."""
        stream = await _open_stream(Address.from_url(url), timeout)
        try:
            subscriber = cls(stream, timeout, sharded)
            if channels:
                with trio.fail_after(timeout):
                    await subscriber.subscribe(channels)
                    while not subscriber.channels >= set(channels):
                        await subscriber.messages()
            yield subscriber
        finally:
            await trio.aclose_forcefully(stream)

    def confirmations(self) -> list[tuple[bytes, bool]]:
        """What Redis confirmed since the last call, in order: (channel, True) for a
        subscription, (channel, False) for an unsubscription."""
        taken, self._confirmations = self._confirmations, []
        return taken

    async def subscribe(self, channels: Sequence[bytes]) -> None:
        """Ask for more channels; ``channels`` shows them once Redis confirms."""
        await self._send(pack(self._subscribe, *channels))

    async def unsubscribe(self, channels: Sequence[bytes]) -> None:
        await self._send(pack(self._unsubscribe, *channels))

    async def request(self, batches: Sequence[Sequence[bytes]], *, subscribe: bool) -> None:
        """Subscribe (or unsubscribe) each batch of channels with one command, all the
        commands in one write; ``confirmations`` tells Redis's answers."""
        command = self._subscribe if subscribe else self._unsubscribe
        await self._send(b"".join(pack(command, *batch) for batch in batches))

    async def ping(self) -> None:
        """Its answer comes among the messages (and proves the connection alive)."""
        await self._send(pack("PING"))

    async def messages(self) -> list[tuple[bytes, bytes]]:
        """Wait for data, then return every (channel, payload) published that arrived with it
        (possibly none: a PING's answer, a subscription confirmed). Raises ``ConnectionLost``."""
        try:
            data = await self._stream.receive_some(RECEIVE_SIZE)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionLost(f"the subscription's connection broke: {exc}") from exc
        if not data:
            raise ConnectionLost("Redis closed the subscription's connection")
        self._reader.feed(data)  # type: ignore[arg-type]  # any buffer works
        published = []
        try:
            while (reply := self._reader.gets()) is not False:
                if isinstance(reply, ReplyError):
                    raise ConnectionLost(f"Redis refused a subscription command: {reply}")
                kind = reply[0]
                if kind == self._kind:
                    published.append((reply[1], reply[2]))
                elif kind in (b"subscribe", b"ssubscribe"):
                    self.channels.add(reply[1])
                    self._confirmations.append((reply[1], True))
                elif kind in (b"unsubscribe", b"sunsubscribe"):
                    self.channels.discard(reply[1])
                    self._confirmations.append((reply[1], False))
        except hiredis.ProtocolError as exc:
            raise ConnectionLost(f"not Redis's protocol: {exc}") from exc
        return published

    async def _send(self, data: bytes) -> None:
        try:
            with trio.fail_after(self._timeout):
                await self._stream.send_all(data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionLost(f"the subscription's connection broke: {exc}") from exc
