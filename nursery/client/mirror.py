"""``Mirror``: the todos of one user by id and the revision they reflect. No I/O."""

from __future__ import annotations

from typing import Any

from nursery.client.errors import ProtocolViolation


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def _todo(value: Any) -> dict[str, Any]:
    if not (
        isinstance(value, dict) and isinstance(value.get("id"), str)
        and _int(value.get("rev")) is not None
    ):
        raise ProtocolViolation(f"not a todo: {value!r:.200}")
    return value


class Mirror:
    """The local copy of one user's todos (``todos``: id → todo as JSON) as of revision ``rev``.

    ``apply`` takes ``change`` frames. A change at or below ``rev`` is already reflected and
    is ignored; ``ignored`` counts those. The server never resends a revision on a resume, so
    after a clean run ``ignored`` is 0 and ``applied`` counts every change received. Revisions
    may skip (a backlog carries only the latest state of each todo) but never go backwards.
    ``loaded`` says whether the mirror was ever filled from the list (``load``).
    """

    def __init__(self) -> None:
        self.rev = 0
        self.todos: dict[str, dict[str, Any]] = {}
        self.loaded = False
        self.applied = 0
        self.ignored = 0

    def load(self, items: list[dict[str, Any]], rev: int) -> None:
        """Replace everything with a list read at revision ``rev`` (which may be lower than
        ``rev`` was: after a reset the server's history is the truth)."""
        if _int(rev) is None or rev < 0:
            raise ProtocolViolation(f"not a revision: {rev!r}")
        todos = [_todo(item) for item in items]
        self.todos = {todo["id"]: todo for todo in todos}
        self.rev = rev
        self.loaded = True

    def apply(self, frame: dict[str, Any]) -> bool:
        """Apply one ``change`` frame; ``False`` if it was already reflected (ignored)."""
        rev = _int(frame.get("rev"))
        if rev is None:
            raise ProtocolViolation(f"change without a revision: {frame!r:.200}")
        if rev <= self.rev:
            self.ignored += 1
            return False
        match frame.get("op"):
            case "upsert":
                self._upsert(_todo(frame.get("todo")))
            case "delete" if isinstance(frame.get("id"), str):
                self.todos.pop(frame["id"], None)
            case _:
                raise ProtocolViolation(f"unknown change: {frame!r:.200}")
        self.rev = rev
        self.applied += 1
        return True

    def _upsert(self, todo: dict[str, Any]) -> None:
        # A list read in pages may hold a todo newer than the first page's rev (it changed
        # while the pages were read); the backlog then brings an older state first.
        current = self.todos.get(todo["id"])
        if current is None or current["rev"] < todo["rev"]:
            self.todos[todo["id"]] = todo
