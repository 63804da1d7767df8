"""Password hashing with argon2id, in a worker thread (~100 ms of CPU per call)."""

from __future__ import annotations

import trio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id with the library's (OWASP-aligned) defaults

# Verified against when the email is unknown, so that answer costs the same time as a wrong
# password and does not reveal which emails have accounts.
_DUMMY_HASH = _hasher.hash("nursery-dummy-password")

# Hashing is CPU-bound: at most this many at once, so a login flood queues here instead of
# starving the event loop's thread pool.
_hashing_slots = trio.CapacityLimiter(4)


async def hash_password(password: str) -> str:
    return await trio.to_thread.run_sync(_hasher.hash, password, limiter=_hashing_slots)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant work whether or not the account exists (``password_hash`` None)."""

    def verify() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and (
                password_hash is not None
            )
        except (VerificationError, InvalidHashError):
            return False

    return await trio.to_thread.run_sync(verify, limiter=_hashing_slots)
