"""One websocket session, whatever its protocol: the rules every live socket obeys, once.

A protocol (``Vocabulary``: /ws in ``api/ws.py``, graphql-transport-ws in
``api/graphql/connection.py``) says only what its messages mean. The session owns the rest:

- **authentication at the start**: the protocol's opening message must carry a token within
  ``hello_timeout`` (else the protocol's ``auth_timeout`` code); a refused token closes with
  its ``auth_refused`` code;
- **admission**: at most ``setup_concurrency`` sessions are set up at once per instance
  (``Hub.admit``): a reconnect storm queues, and a session still waiting after 10 s gets 1013;
- **membership** in the hub and presence while live: the hub closes it with 4001 when its
  session is revoked (on any instance) and 1012 when the instance shuts down;
- **token expiry**: 4001 the moment the token expires;
- **keep-alive**: the protocol's ping after ``ping_interval`` without a message from the
  client; still nothing ``ping_timeout`` later: 4008;
- **the client's message rate** (GCRA, ``message_rate``; more: 4029) and size (the transport:
  1009);
- **sockets per user**: at most ``max_sockets_per_user`` of a user's sessions live on this
  instance; one more is closed with 4420 once authenticated;
- **the bounded outbox**: more than ``queue_size`` frames waiting for the socket, or a flush
  that takes longer than ``send_timeout``: 4008 (a slow client is dropped, not buffered);
- **errors to close codes** in one table (``_closing_for``), and the close handshake,
  shielded and bounded by ``send_timeout``.

One task per session (the caller's, usually the connection's own): it waits for the client's
next message, a wake-up (``wake``: the protocol has work, or the outbox must be flushed) or
its next deadline (ping, pong, expiry). Hub events do not need it: ``offer`` hands them to the
protocol synchronously, which usually writes them to the socket at once (``send``). Protocols
that need tasks of their own (GraphQL operations) start them in ``nursery``, which the session
owns: they end with it.

Resource handling: ``run`` closes the transport (with the close frame chosen, or not at all
when the peer already left); the caller closes the socket afterwards.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from nursery.errors import StoreUnavailable, Unauthenticated, Unavailable
from nursery.protocol.close_codes import (
    NORMAL,
    RATE_LIMITED,
    TOO_MANY_SOCKETS,
    TOO_SLOW,
    TRY_AGAIN_LATER,
    UNAUTHENTICATED,
    ProtocolError,
    TransportClosed,
)
from nursery.ratelimit.gcra import Rate, gcra
from nursery.service.accounts import Principal
from nursery.service.hub import Hub, Item

log = logging.getLogger(__name__)

NEVER = float("inf")

Authenticate = Callable[[str], Awaitable[Principal]]  # ``Accounts.authenticate``


class Transport(Protocol):
    """One websocket, as the session needs it (``edge.websocket.WebSocket`` is one)."""

    def send(self, text: str) -> None:
        """Queue one text message without blocking (written at once when the socket has
        room). Raises ``TransportClosed`` when the peer is gone."""

    @property
    def backlog(self) -> int:
        """Messages queued and not yet written to the socket."""

    async def drain(self) -> None:
        """Wait until the backlog is written. Only one task may drain at a time."""

    async def receive(self) -> str | bytes:
        """The next message; cancel-safe. Raises ``TransportClosed`` when the peer has gone
        (or closed: the transport answered its close frame), ``ProtocolError`` for a frame
        the websocket protocol does not allow."""

    async def close(self, code: int, reason: str) -> None:
        """The close handshake: our close frame, then the peer's (bounded by the caller)."""


@dataclass(frozen=True, slots=True)
class SessionLimits:
    hello_timeout: float = 5.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    send_timeout: float = 10.0
    queue_size: int = 256
    message_rate: Rate = Rate(20, 1.0)
    max_sockets_per_user: int = 50  # on this instance (Centrifugo's client_user_connection_limit)


class SessionObserver(Protocol):
    """What sessions report (``nursery.metrics.Metrics`` is one)."""

    def ws_sent(self, kind: str) -> None: ...

    def ws_closed(self, code: int, reason: str) -> None: ...

    def sync_lag(self, seconds: float) -> None: ...


class _NoObserver:
    def ws_sent(self, kind: str) -> None:
        pass

    def ws_closed(self, code: int, reason: str) -> None:
        pass

    def sync_lag(self, seconds: float) -> None:
        pass


DEFAULT_LIMITS = SessionLimits()
NO_OBSERVER = _NoObserver()


class Vocabulary(Protocol):
    """A websocket protocol's part of a session: its messages. One object per session."""

    name: str  # for logs: "ws", "graphql"
    ping: str  # the protocol's keep-alive message
    auth_refused: int  # close code when the opening message's token is refused
    auth_timeout: int  # close code when no opening message came in time
    internal_error: int  # close code when the server failed

    def opening(self, message: str | bytes) -> str | None:
        """The token, if ``message`` is the protocol's opening message (``""`` when it
        carries none); ``None`` for a message it answered and the session keeps waiting.
        Raises ``ProtocolError`` for anything else."""

    async def start(self, who: Principal) -> None:
        """The session is admitted, a hub member and online: greet the client (and send its
        backlog). Hub events may be offered from before this is called."""

    def receive(self, message: str | bytes) -> None:
        """A message from the client after ``start``; never blocks."""

    def offer(self, item: Item) -> None:
        """An event for this session's user (from the hub); never blocks."""

    async def settle(self) -> None:
        """Do the work asked for with ``Session.wake``."""


class Session:
    """A hub subscriber for one websocket. Build the protocol's ``Vocabulary`` with the
    session, then ``run`` it."""

    __slots__ = (
        "user_id", "session_id", "who", "nursery", "_transport", "_authenticate", "_hub",
        "_limits", "_observer", "_vocabulary", "_scope", "_waiting", "_woken", "_closing",
        "_peer_gone", "_last_heard", "_pinged_at", "_expires_at", "_allowance", "_flushing",
        "frames_in", "frames_out",
    )

    def __init__(
        self,
        transport: Transport,
        *,
        authenticate: Authenticate,
        hub: Hub,
        limits: SessionLimits = DEFAULT_LIMITS,
        observer: SessionObserver = NO_OBSERVER,
    ) -> None:
        self.user_id = self.session_id = ""
        self.who: Principal | None = None
        self.nursery: trio.Nursery | None = None
        self._transport = transport
        self._authenticate = authenticate
        self._hub = hub
        self._limits = limits
        self._observer = observer
        self._vocabulary: Vocabulary | None = None
        self._scope = trio.CancelScope()
        self._waiting: trio.CancelScope | None = None
        self._woken = False
        self._closing: tuple[int, str] | None = None
        self._peer_gone = False
        self._last_heard = trio.current_time()
        self._pinged_at: float | None = None
        self._expires_at = NEVER
        self._allowance: float | None = None  # GCRA state of the client's message rate
        self._flushing: trio.Lock | None = None  # made when a flush is first needed
        self.frames_in = self.frames_out = 0

    # -- for the protocol and the hub (never block) ---------------------------------------------

    def send(self, text: str, kind: str) -> None:
        """Queue a message for the client; one over ``queue_size`` waiting closes as too slow."""
        try:
            self._transport.send(text)
        except TransportClosed:
            self._peer_gone = True
            self._scope.cancel()
            return
        self.frames_out += 1
        self._observer.ws_sent(kind)
        backlog = self._transport.backlog
        if backlog > self._limits.queue_size:
            self.close(TOO_SLOW, "too slow: messages were queuing up")
        elif backlog and self._waiting is not None:
            self._waiting.cancel()  # the session task flushes

    async def send_flowing(self, text: str, kind: str) -> None:
        """``send``, then wait while the client is behind: for bulk sends (a backlog)."""
        self.send(text, kind)
        if self._transport.backlog:
            await self._flush()

    def wake(self) -> None:
        """Ask the session task to run the protocol's ``settle``."""
        self._woken = True
        if self._waiting is not None:
            self._waiting.cancel()

    def offer(self, item: Item) -> None:
        if self._vocabulary is not None:
            self._vocabulary.offer(item)

    def close(self, code: int, reason: str) -> None:
        """End the session with this close code (the first reason given wins)."""
        if self._closing is None:
            self._closing = (code, reason)
        self._scope.cancel()

    # -- the session task -----------------------------------------------------------------------

    async def run(self, vocabulary: Vocabulary) -> tuple[int | None, str]:
        """Serve the session until it ends; returns the close code sent (None when the peer
        left first) and its reason."""
        self._vocabulary = vocabulary
        try:
            with self._scope:
                try:
                    await self._serve(vocabulary)
                except* TransportClosed:
                    self._peer_gone = True
                except* Exception as group:  # noqa: BLE001 - mapped to a close code, logged if unknown
                    self.close(*self._closing_for(group.exceptions[0], vocabulary))
        finally:
            self._vocabulary = None  # the vocabulary refers back to the session
        if self._peer_gone:
            return None, "the client left"
        code, reason = self._closing or (NORMAL, "")
        self._observer.ws_closed(code, reason)
        with trio.CancelScope(shield=True), trio.move_on_after(self._limits.send_timeout):
            try:
                await self._transport.close(code, reason)
            except TransportClosed:
                pass
        return code, reason

    def _closing_for(self, exc: BaseException, vocabulary: Vocabulary) -> tuple[int, str]:
        """The close code of every error that can end a session: the one table."""
        while isinstance(exc, BaseExceptionGroup):  # from the protocol's tasks
            exc = exc.exceptions[0]
        match exc:
            case ProtocolError(code=code, reason=reason):
                return code, reason
            case Unauthenticated(message=message):
                return UNAUTHENTICATED, message
            case StoreUnavailable():
                return TRY_AGAIN_LATER, "the database is unavailable, try again"
            case Unavailable(message=message):
                return TRY_AGAIN_LATER, message
        log.error("websocket session failed", exc_info=exc)
        return vocabulary.internal_error, "internal server error"

    async def _serve(self, vocabulary: Vocabulary) -> None:
        who = await self._open(vocabulary)
        slot = await self._hub.admit()
        try:
            # Checked and joined with no await between: two sockets cannot both take the last place.
            limit = self._limits.max_sockets_per_user
            if self._hub.connections_of(who.user_id) >= limit:
                raise ProtocolError(TOO_MANY_SOCKETS, f"more than {limit} websockets for this user")
            try:
                await self._hub.join(self)  # before the protocol reads the store
                await self._hub.announce(who.user_id, who.session_id, connected=True)
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    with self._until_expiry():
                        await vocabulary.start(who)
                    slot.release()
                    await self._serve_live(vocabulary)
            finally:
                self._hub.detach(self)
                with trio.CancelScope(shield=True), trio.move_on_after(self._hub.announce_timeout):
                    await self._hub.announce(who.user_id, who.session_id, connected=False)
        finally:
            slot.release()

    async def _open(self, vocabulary: Vocabulary) -> Principal:
        token: str | None = None
        with trio.move_on_after(self._limits.hello_timeout):
            while token is None:
                token = vocabulary.opening(await self._receive())
                if self._transport.backlog:
                    await self._flush()
        if token is None:
            raise ProtocolError(vocabulary.auth_timeout, "no opening message in time")
        try:
            who = await self._authenticate(token)
        except Unauthenticated as exc:
            raise ProtocolError(vocabulary.auth_refused, exc.message) from None
        self.who, self.user_id, self.session_id = who, who.user_id, who.session_id
        self._expires_at = trio.current_time() + max(0.0, who.expires_at - time.time())
        return who

    async def _serve_live(self, vocabulary: Vocabulary) -> None:
        while True:
            if self._transport.backlog:
                await self._flush()
            if self._woken:
                self._woken = False
                with self._until_expiry():
                    await vocabulary.settle()
                continue
            if trio.current_time() >= self._next_deadline():
                self._on_deadline(vocabulary)
            message: str | bytes | None = None
            with trio.CancelScope(deadline=self._next_deadline()) as waiting:
                self._waiting = waiting
                message = await self._receive()
            self._waiting = None
            if message is not None:
                vocabulary.receive(message)

    async def _receive(self) -> str | bytes:
        message = await self._transport.receive()
        self.frames_in += 1
        now = trio.current_time()
        verdict, allowance = gcra(self._allowance, now, self._limits.message_rate)
        if not verdict.allowed:
            raise ProtocolError(RATE_LIMITED, "too many messages")
        self._allowance = allowance
        self._last_heard, self._pinged_at = now, None
        return message

    async def _flush(self) -> None:
        if self._flushing is None:
            self._flushing = trio.Lock()
        async with self._flushing:
            with trio.move_on_after(self._limits.send_timeout) as timer:
                await self._transport.drain()
        if timer.cancelled_caught:
            self.close(TOO_SLOW, "too slow: a write timed out")
            await trio.lowlevel.checkpoint()  # raises Cancelled: the session is closing

    # -- keep-alive and expiry ------------------------------------------------------------------

    def _next_deadline(self) -> float:
        if self._pinged_at is None:
            due = self._last_heard + self._limits.ping_interval
        else:
            due = self._pinged_at + self._limits.ping_timeout
        return min(due, self._expires_at)

    def _on_deadline(self, vocabulary: Vocabulary) -> None:
        if trio.current_time() >= self._expires_at:
            self.close(UNAUTHENTICATED, "the session expired")
        elif self._pinged_at is None:
            self._pinged_at = trio.current_time()
            self.send(vocabulary.ping, "ping")
        else:
            self.close(TOO_SLOW, "no answer to ping")

    def _until_expiry(self) -> trio.CancelScope:
        """A scope for long work (a backlog): the session still ends when the token expires."""
        return trio.CancelScope(deadline=self._expires_at)
