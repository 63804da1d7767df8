"""The domain's values, shared by every layer: frozen dataclasses, no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "email": self.email, "created_at": iso(self.created_at)}


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user with the password hash: only the accounts service sees it."""

    user: User
    password_hash: str


@dataclass(frozen=True, slots=True)
class Session:
    """One device's login."""

    id: str
    user_id: str
    device: str
    created_at: datetime
    last_seen_at: datetime
    revoked_at: datetime | None = None

    def to_json(self, *, current: bool = False, online: bool = False) -> dict[str, Any]:
        return {
            "id": self.id,
            "device": self.device,
            "created_at": iso(self.created_at),
            "last_seen_at": iso(self.last_seen_at),
            "current": current,
            "online": online,
        }


@dataclass(frozen=True, slots=True)
class Todo:
    id: str
    title: str
    notes: str
    done: bool
    due: datetime | None
    tags: tuple[str, ...]
    rev: int
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "notes": self.notes,
            "done": self.done,
            "due": iso(self.due),
            "tags": list(self.tags),
            "rev": self.rev,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a user's change feed: the state of a todo as of revision ``rev``."""

    rev: int
    op: Literal["upsert", "delete"]
    id: str
    todo: Todo | None = None

    def to_json(self) -> dict[str, Any]:
        if self.todo is not None:
            return {"rev": self.rev, "op": self.op, "todo": self.todo.to_json()}
        return {"rev": self.rev, "op": self.op, "id": self.id}


_rendered: tuple[Change | None, str, str] = (None, "", "")


def rendered(change: Change) -> tuple[str, str]:
    """``change`` as JSON text, and its todo's (``""`` for a delete), made once per change: the
    writer's answer, the broker's message and every device's frame are cut from them."""
    global _rendered
    if _rendered[0] is not change:
        if change.todo is None:
            todo = ""
            text = json.dumps(change.to_json(), separators=(",", ":"), ensure_ascii=False)
        else:
            todo = json.dumps(change.todo.to_json(), separators=(",", ":"), ensure_ascii=False)
            text = f'{{"rev":{change.rev},"op":"{change.op}","todo":{todo}}}'
        _rendered = (change, text, todo)
    return _rendered[1], _rendered[2]


@dataclass(frozen=True, slots=True)
class TodoDraft:
    """Validated fields of a new todo."""

    title: str
    notes: str = ""
    done: bool = False
    due: datetime | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TodoPatch:
    """Validated fields to change; only the keys present in ``fields`` are written."""

    fields: dict[str, Any] = field(default_factory=dict)
    if_rev: int | None = None


@dataclass(frozen=True, slots=True)
class TodoPage:
    items: list[Todo]
    next_cursor: str | None
    rev: int


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """Changes after a revision. ``horizon``: the newest revision whose tombstone was purged;
    a reader asking for changes since a revision below it has lost deletes and must reset."""

    changes: list[Change]
    rev: int
    more: bool
    horizon: int

    def resets(self, since: int) -> bool:
        """Whether a reader at ``since`` must refetch everything instead of applying changes:
        deletes after ``since`` were forgotten (below the horizon), or ``since`` is beyond the
        server's head (a revision from another history: another deployment, a restored
        backup). /api/changes and every live feed answer it the same way (``reset``)."""
        return since < self.horizon or since > self.rev


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A todo write. ``replayed``: an earlier write with the same idempotency key is returned."""

    change: Change
    replayed: bool = False


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def todo_from_json(data: dict[str, Any]) -> Todo:
    """The inverse of ``Todo.to_json`` (for payloads that went through the broker or a store)."""
    created = _parse_time(data["created_at"])
    updated = _parse_time(data["updated_at"])
    assert created is not None and updated is not None
    return Todo(
        id=data["id"],
        title=data["title"],
        notes=data["notes"],
        done=data["done"],
        due=_parse_time(data["due"]),
        tags=tuple(data["tags"]),
        rev=data["rev"],
        created_at=created,
        updated_at=updated,
    )


def change_from_json(data: dict[str, Any]) -> Change:
    """The inverse of ``Change.to_json``."""
    if data["op"] == "delete":
        return Change(rev=data["rev"], op="delete", id=data["id"])
    todo = todo_from_json(data["todo"])
    return Change(rev=data["rev"], op="upsert", id=todo.id, todo=todo)
