"""Subscription sources and resolvers: a feed's events as GraphQL events.

A source starts the operation's feed (``live.LiveFeeds``) and returns its stream; graphql-core
then runs the selection set once per event, the event being the root value. ``todoChanged``
keeps the feed's head, changes and resets; ``sessionEvents`` its session and presence events.
Both exist only over the websocket (HTTP refuses subscription operations earlier).
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Any

from ariadne import SubscriptionType

from nursery.models import Change
from nursery.pubsub.events import TodoChanged
from nursery.service.feed import FeedEvent, Head, Online, Reset, SessionEvent

from . import arguments
from .context import Info, context_of
from .live import Wanted

subscription = SubscriptionType()


def _todo_event(event: FeedEvent) -> bool:
    return isinstance(event, Head | Change | TodoChanged | Reset)


def _session_event(event: FeedEvent) -> bool:
    return isinstance(event, SessionEvent | Online)


async def _open(info: Info, since: int | None, wanted: Wanted) -> AsyncIterable[FeedEvent]:
    context = context_of(info)
    if context.live is None:  # pragma: no cover - refused before execution over HTTP
        raise RuntimeError("subscriptions need the websocket")
    return await context.live.open(since, wanted)


@subscription.source("todoChanged")  # type: ignore[arg-type]  # Ariadne types sources as generators
async def todo_changed_source(
    _: Any, info: Info, since: int | None = None
) -> AsyncIterable[FeedEvent]:
    args = arguments.parse(arguments.SubscriptionArguments, since=since)
    return await _open(info, args.since, _todo_event)


@subscription.field("todoChanged")
def resolve_todo_changed(event: FeedEvent, _: Info, **__: Any) -> dict[str, Any]:
    match event:
        case Head(rev=rev):
            return {"kind": "HEAD", "rev": rev, "change": None}
        case Reset(rev=rev):
            return {"kind": "RESET", "rev": rev, "change": None}
        case Change():
            return {"kind": "CHANGE", "rev": event.rev, "change": event}
        case TodoChanged():
            return {"kind": "CHANGE", "rev": event.rev, "change": event.change}
    raise TypeError(f"not a todo event: {event!r}")  # pragma: no cover - filtered by source


@subscription.source("sessionEvents")  # type: ignore[arg-type]
async def session_events_source(_: Any, info: Info) -> AsyncIterable[FeedEvent]:
    return await _open(info, None, _session_event)


@subscription.field("sessionEvents")
def resolve_session_events(event: FeedEvent, info: Info) -> dict[str, Any]:
    match event:
        case SessionEvent(op=op, session=session):
            who = context_of(info).caller.known_principal
            current = who is not None and session.get("id") == who.session_id
            return {"kind": op, "session": {**session, "current": current}, "online": None}
        case Online(sessions=sessions):
            return {"kind": "presence", "session": None, "online": list(sessions)}
    raise TypeError(f"not a session event: {event!r}")  # pragma: no cover - filtered by source


bindables = [subscription]
