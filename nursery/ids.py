"""Ids for rows and requests, made without a system call each.

``uuid.uuid4()`` and ``secrets`` read the kernel's randomness on every call: a system call
that was ~10 % of a todo write's CPU on these machines (three ids a write: the todo, its
audit entry, the request). Todo, audit-entry and request ids need to be unique, not secret
(a todo id is useless without its owner's token), so they come from a generator seeded once
from the kernel. Sessions and secrets keep ``uuid4``/``secrets``: their ids must not be
guessable.
"""

from __future__ import annotations

import random
import uuid

_random = random.Random()  # seeded from os.urandom


def row_id() -> uuid.UUID:
    """A random (version 4) UUID for a todo or an audit entry."""
    return uuid.UUID(int=_random.getrandbits(128), version=4)


def request_id() -> str:
    """16 hex digits for a request that brought none."""
    return f"{_random.getrandbits(64):016x}"
