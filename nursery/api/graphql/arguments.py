"""Validation of the GraphQL arguments that are not bodies: list, changes and write options.

Bodies (credentials, new todo, todo changes) are validated by ``nursery.service.inputs``
exactly as REST validates them. The bounds here are REST's query-string bounds (the same
constants, imported), expressed as pydantic models so that a failure is the same
``InvalidInput`` with per-field details (``inputs.parse_object``).

TODO(lead): REST checks these bounds inline in ``api/rest.py``; these models belong in
``service/inputs.py`` so that both transports use one definition.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from nursery.api.rest import MAX_CURSOR, MAX_IDEMPOTENCY_KEY, MAX_QUERY
from nursery.service import inputs
from nursery.service.todos import MAX_CHANGES, MAX_PAGE

MAX_REVISION = 2**62
# A GraphQL Int is 32-bit, so larger revisions cannot even be sent; the bound matches REST.
Revision = Annotated[int, Field(ge=0, le=MAX_REVISION)]


class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TodoListArguments(_Arguments):
    done: bool | None = None
    q: Annotated[str, StringConstraints(max_length=MAX_QUERY)] | None = None
    first: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 50
    after: Annotated[str, StringConstraints(max_length=MAX_CURSOR)] | None = None

    @field_validator("q")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        # PostgreSQL text cannot hold U+0000: refused here (invalid_input), as REST does.
        if value is not None and "\x00" in value:
            raise ValueError("may not contain the NUL character")
        return value


class ChangesArguments(_Arguments):
    since: Revision = 0
    limit: Annotated[int, Field(ge=1, le=MAX_CHANGES)] = 500


class SubscriptionArguments(_Arguments):
    since: Revision | None = None


class WriteOptions(_Arguments):
    if_rev: Revision | None = None
    idempotency_key: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_IDEMPOTENCY_KEY)
    ] | None = None

    @field_validator("idempotency_key")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and not value.isprintable():
            raise ValueError(f"1 to {MAX_IDEMPOTENCY_KEY} printable characters")
        return value


def parse[M: BaseModel](model: type[M], **arguments: Any) -> M:
    """Validate resolver arguments (``None`` means not given); raises ``InvalidInput``."""
    return inputs.parse_object(model, {k: v for k, v in arguments.items() if v is not None})
