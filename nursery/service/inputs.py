"""Validated input: what REST and GraphQL accept, checked once, here (pydantic, strict JSON).

Unknown fields are refused (a typo must not be silently ignored), strings are bounded, and
every failure becomes ``InvalidInput`` with per-field details, or ``MalformedInput`` when the
body is not a JSON object at all.

Due dates: ``due`` is an instant (ISO 8601 date-time; without a zone it is taken as UTC), or a
calendar day alone, ``"2026-12-01"``, which means that day and is stored as its first instant
in UTC, ``2026-12-01T00:00:00Z`` (it reads back in that form). A client that shows due days
(the web page's date field) reads a due at exactly 00:00 UTC as the day it names. REST and
GraphQL take both forms, through this module.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from nursery.errors import InvalidInput, MalformedInput
from nursery.models import TodoDraft, TodoPatch

MAX_TITLE = 500
MAX_NOTES = 10_000
MAX_TAGS = 20
MAX_TAG = 50
MAX_DEVICE = 100

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TITLE)]
Notes = Annotated[str, StringConstraints(max_length=MAX_NOTES)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TAG)]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS)]
Device = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_DEVICE)]

_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_INSTANT = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt_ ]")


def _day_or_instant(value: Any) -> Any:
    """``"2026-12-01"`` → 2026-12-01T00:00:00Z (see the module docstring); other text that
    starts like an ISO 8601 date-time goes on to pydantic's parser. Anything else is refused
    here: the field is parsed leniently (strict mode would refuse the text a before-validator
    hands on), and leniency must not let numbers through as Unix times."""
    if not isinstance(value, str):
        if isinstance(value, datetime):  # already parsed (a Python caller)
            return value
        raise ValueError("must be ISO 8601 text: a date-time or a day (YYYY-MM-DD)")
    if _DAY.match(value):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a day of the calendar") from None
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    if not _INSTANT.match(value):
        raise ValueError("must be ISO 8601 text: a date-time or a day (YYYY-MM-DD)")
    return value


Due = Annotated[
    datetime,
    Strict(False),
    BeforeValidator(_day_or_instant),
    WithJsonSchema({
        "anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"}],
        "description": "An instant, or a day alone (YYYY-MM-DD: that day, 00:00 UTC).",
    }),
]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL text cannot hold U+0000: refuse it here (422), not in the database (500).
        strings = value if isinstance(value, list) else [value]
        if any(isinstance(s, str) and "\x00" in s for s in strings):
            raise ValueError("may not contain the NUL character")
        return value


class Credentials(_Input):
    email: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=254)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    device: Device | None = None


def _utc(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)  # a due date without a zone is taken as UTC
    return moment


def _storable_due(moment: datetime | None) -> datetime | None:
    """In UTC, as stored: an instant that shifts out of years 1..9999 is refused here (422),
    not by the driver (500)."""
    try:
        moment = _utc(moment)
        return None if moment is None else moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range") from None


class NewTodo(_Input):
    title: Title
    notes: Notes = ""
    done: bool = False
    due: Due | None = None
    tags: Tags = []

    @field_validator("due")
    @classmethod
    def _due_storable(cls, value: datetime | None) -> datetime | None:
        return _storable_due(value)

    def draft(self) -> TodoDraft:
        return TodoDraft(self.title, self.notes, self.done, _utc(self.due), tuple(self.tags))


class TodoChanges(_Input):
    title: Title | None = None
    notes: Notes | None = None
    done: bool | None = None
    due: Due | None = None
    tags: Tags | None = None
    if_rev: Annotated[int, Field(ge=0)] | None = None

    @field_validator("due")
    @classmethod
    def _due_storable(cls, value: datetime | None) -> datetime | None:
        return _storable_due(value)

    @field_validator("title", "notes", "done", "tags")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may not be null")
        return value

    def patch(self) -> TodoPatch:
        given = self.model_fields_set - {"if_rev"}
        fields = {name: getattr(self, name) for name in given}
        if "due" in fields:
            fields["due"] = _utc(fields["due"])
        if "tags" in fields:
            fields["tags"] = tuple(fields["tags"])
        return TodoPatch(fields, self.if_rev)


def parse_json[M: BaseModel](model: type[M], body: bytes | str) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise _translate(exc) from None


def parse_object[M: BaseModel](model: type[M], data: Any) -> M:
    """For input that is already decoded (GraphQL arguments)."""
    try:
        return model.model_validate(data, strict=False)
    except ValidationError as exc:
        raise _translate(exc) from None


def _translate(exc: ValidationError) -> InvalidInput | MalformedInput:
    errors = exc.errors(include_url=False, include_input=False)
    for e in errors:
        if e["type"] == "json_invalid":  # pydantic's parser says what and where
            return MalformedInput(f"the body is not valid JSON: {e.get('ctx', {}).get('error', e['msg'])}")
    if any(e["type"] == "json_type" for e in errors) or (errors and errors[0]["type"] == "model_type"):
        return MalformedInput("the body must be a JSON object")
    details = [{"field": ".".join(str(p) for p in e["loc"]) or None, "message": _message(e)} for e in errors]
    return InvalidInput("some fields are not valid", details=details)


def _message(error: Any) -> str:
    """A field's message without pydantic's "Value error, " prefix: our validators' own text."""
    raised = error.get("ctx", {}).get("error") if error["type"] == "value_error" else None
    return str(raised) if raised is not None else str(error["msg"])
