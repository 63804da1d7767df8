"""What a resolver sees of its request: the services, who is calling, and (over the websocket)
where subscriptions start their feeds.

Authentication is one store call per request, not one per field: ``Caller.principal`` runs
``Accounts.authenticate`` at most once and every resolver of the request shares its outcome
(the principal, or the ``Unauthenticated`` it raised). Sibling fields resolve concurrently,
so the first one authenticates and the others wait for it under a lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio
from graphql import GraphQLResolveInfo

from nursery.errors import NurseryError
from nursery.service.accounts import Accounts, Principal
from nursery.service.todos import Todos

from .live import LiveFeeds


class Caller:
    """The caller of one request, authenticated on first use."""

    def __init__(self, accounts: Accounts, token: str | None) -> None:
        self._accounts = accounts
        self._token = token
        self._lock = trio.Lock()
        self._outcome: Principal | NurseryError | None = None

    @classmethod
    def known(cls, accounts: Accounts, who: Principal) -> Caller:
        """A caller authenticated already (a websocket, at ``connection_init``)."""
        caller = cls(accounts, None)
        caller._outcome = who
        return caller

    @property
    def known_principal(self) -> Principal | None:
        """The principal if authentication already succeeded (no store call)."""
        return self._outcome if isinstance(self._outcome, Principal) else None

    async def principal(self) -> Principal:
        """Raises ``Unauthenticated`` (every time) unless the token names a live session."""
        async with self._lock:
            if self._outcome is None:
                try:
                    self._outcome = await self._accounts.authenticate(self._token)
                except NurseryError as exc:
                    self._outcome = exc
        if isinstance(self._outcome, NurseryError):
            raise self._outcome
        return self._outcome


@dataclass(frozen=True, slots=True)
class Context:
    accounts: Accounts
    todos: Todos
    caller: Caller
    client: str = "unknown"  # the caller's address, for the rate limits of register/login
    live: LiveFeeds | None = None  # only over the websocket


Info = GraphQLResolveInfo[Any]  # what resolvers are given (its ``context`` is a ``Context``)


def context_of(info: Info) -> Context:
    context = info.context
    assert isinstance(context, Context)
    return context
