"""Accounts and device sessions: register, login, logout, authenticate, list, revoke."""

from __future__ import annotations

import re
from dataclasses import dataclass

from nursery.errors import InvalidInput, NotFound, Unauthenticated
from nursery.models import Session, User
from nursery.pubsub.broker import Presence
from nursery.pubsub.events import session_changed
from nursery.service import inputs
from nursery.service.audit import Audit
from nursery.service.limits import Limits
from nursery.service.notify import Notifier
from nursery.service.passwords import hash_password, verify_password
from nursery.service.session_cache import SessionCache
from nursery.service.tokens import TokenSigner
from nursery.stores.audit import LOGIN, LOGOUT, REVOKE
from nursery.stores.base import AccountStore

# Deliberately loose: one @, something on both sides, a dot in the domain, no spaces.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DEFAULT_DEVICE = "unnamed device"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user, through one of their sessions (devices)."""

    user_id: str
    session_id: str
    expires_at: float = float("inf")  # unix time at which the token stops being valid
    device: str = ""  # the session's device name (for the audit trail)


@dataclass(frozen=True, slots=True)
class Login:
    user: User
    session: Session
    token: str


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise InvalidInput(
            "not an email address", details=[{"field": "email", "message": "not an email address"}]
        )
    return email


class Accounts:
    def __init__(
        self,
        store: AccountStore,
        tokens: TokenSigner,
        notifier: Notifier,
        presence: Presence,
        limits: Limits,
        *,
        password_min_length: int = 8,
        audit: Audit | None = None,
        sessions: SessionCache | None = None,
    ) -> None:
        self._store = store
        self._sessions = sessions if sessions is not None else SessionCache(ttl=0)
        self._audit = audit
        self._limits = limits
        self._tokens = tokens
        self._notifier = notifier
        self._presence = presence
        self._password_min_length = password_min_length

    @property
    def session_cache(self) -> SessionCache:
        return self._sessions

    async def register(self, form: inputs.Credentials, client: str = "unknown") -> Login:
        """``client``: the caller's address, for rate limits."""
        await self._limits.register(client)
        email = normalise_email(form.email)
        if len(form.password) < self._password_min_length:
            raise InvalidInput(
                "the password is too short",
                details=[{
                    "field": "password",
                    "message": f"at least {self._password_min_length} characters",
                }],
            )
        user = await self._store.create_user(email, await hash_password(form.password))
        return await self._open_session(user, form.device, "register")

    async def login(self, form: inputs.Credentials, client: str = "unknown") -> Login:
        """``client``: the caller's address, for rate limits (per address and per account)."""
        email = form.email.strip().lower()
        await self._limits.login(email, client)
        found = await self._store.credentials(email)
        ok = await verify_password(found.password_hash if found else None, form.password)
        if not ok or found is None:
            raise Unauthenticated("wrong email or password")
        return await self._open_session(found.user, form.device, "password")

    async def _open_session(self, user: User, device: str | None, method: str) -> Login:
        session = await self._store.create_session(user.id, device or DEFAULT_DEVICE)
        if self._audit is not None:
            self._audit.record(LOGIN, user.id, session.id, session.device, details={"method": method})
        await self._notifier.publish(session_changed("created", session))
        return Login(user, session, self._tokens.issue(session.id))

    async def authenticate(self, token: str | None) -> Principal:
        """Raises ``Unauthenticated`` unless the token names a live session."""
        if not token:
            raise Unauthenticated("a bearer token is required")
        session_id, expires_at = self._tokens.read(token)
        session = self._sessions.get(session_id)
        if session is None:
            generation = self._sessions.generation
            session = await self._store.live_session(session_id)
            if session is None:
                raise Unauthenticated("this session has ended")
            self._sessions.put(session, generation)
        return Principal(session.user_id, session.id, expires_at, session.device)

    async def me(self, who: Principal) -> User:
        user = await self._store.get_user(who.user_id)
        if user is None:
            raise Unauthenticated("this account no longer exists")
        return user

    async def logout(self, who: Principal) -> None:
        await self._revoke(who, only=who.session_id, kind=LOGOUT)

    async def sessions(self, who: Principal) -> list[dict[str, object]]:
        sessions = await self._store.list_sessions(who.user_id)
        online = await self._presence.online(who.user_id)
        return [s.to_json(current=s.id == who.session_id, online=s.id in online) for s in sessions]

    async def revoke(self, who: Principal, session_id: str) -> None:
        """Revoke one of the caller's sessions; another user's session id is a 404."""
        if not await self._revoke(who, only=session_id):
            raise NotFound("session not found")

    async def revoke_others(self, who: Principal) -> int:
        return len(await self._revoke(who, keep=who.session_id))

    async def _revoke(
        self,
        who: Principal,
        *,
        only: str | None = None,
        keep: str | None = None,
        kind: str = REVOKE,
    ) -> list[Session]:
        """``kind``: what the audit trail calls it (a logout, or a revocation by ``who``)."""
        revoked = await self._store.revoke_sessions(who.user_id, only=only, keep=keep)
        for session in revoked:
            self._sessions.forget(session.id)
            if self._audit is not None:
                details = {} if kind == LOGOUT else {"session": session.id, "device": session.device}
                self._audit.record(kind, who.user_id, who.session_id, who.device, details=details)
            await self._notifier.publish(session_changed("revoked", session))
        return revoked
