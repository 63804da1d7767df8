"""Keyset cursors of ``list_todos``: the ``(created_at, id)`` of a page's last todo.

The same format as ``postgres._todos`` issues, so a client cannot tell the backends apart.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

from nursery.errors import InvalidInput
from nursery.models import Todo


def encode_cursor(todo: Todo) -> str:
    raw = json.dumps([todo.created_at.isoformat(), todo.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """``(created_at in UTC, todo id in canonical form)``; ``InvalidInput`` for anything we
    did not issue."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, todo_id = json.loads(raw)
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("we only issue cursors with a zone")
        return moment.astimezone(UTC), str(uuid.UUID(todo_id))
    # uuid.UUID(5) raises AttributeError; astimezone at year 1 or 9999, OverflowError;
    # JSON nested thousands deep, RecursionError.
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        raise InvalidInput(
            "bad cursor", details=[{"field": "cursor", "message": "not a cursor from this list"}]
        ) from exc
