"""The REST API (v1) of docs/api.md: auth, sessions, todos, changes; activity and analytics.

Served by the edge's router (``edge.router``): one handler per route, each given the whole
request, answering with a JSON response; our errors become the JSON error shape in
``edge.listener`` (``api.errors.response_for``).
"""

from __future__ import annotations

from typing import Any

from nursery.api.errors import JSON, json_response
from nursery.edge.http import Request, Response
from nursery.edge.peers import client_address
from nursery.edge.router import Router
from nursery.errors import InvalidInput
from nursery.models import Change, rendered
from nursery.service import inputs
from nursery.service.accounts import Accounts, Login, Principal
from nursery.service.activity import MAX_ACTIVITY, MAX_DAYS, Activity
from nursery.service.todos import MAX_CHANGES, MAX_PAGE, Todos

MAX_IDEMPOTENCY_KEY = 200
MAX_QUERY = 200
# Our cursors are ~90 characters; a longer one is not ours, and the decoder need not see it
# (a deeply nested JSON inside one made the JSON parser recurse until it failed).
MAX_CURSOR = 200


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", details=[{"field": field, "message": message}])


def _int_arg(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(name, "must be an integer") from None
    if not low <= value <= high:
        raise _invalid(name, f"must be between {low} and {high}")
    return value


def _bool_arg(request: Request, name: str) -> bool | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() not in {"true", "false"}:
        raise _invalid(name, "must be true or false")
    return raw.lower() == "true"


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()):
        raise _invalid("Idempotency-Key", f"1 to {MAX_IDEMPOTENCY_KEY} printable characters")
    return key


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _todo_response(change: Change, status: int) -> Response:
    """``{"todo": ...}`` from the JSON rendered once for the broker too (``models.rendered``)."""
    todo = rendered(change)[1]
    assert todo, "an upsert"
    return Response(status, f'{{"todo":{todo}}}'.encode(), [("content-type", JSON)])


def _login_body(login: Login) -> dict[str, Any]:
    return {
        "user": login.user.to_json(),
        "session": login.session.to_json(current=True),
        "token": login.token,
    }


def rest_router(
    accounts: Accounts,
    todos: Todos,
    trust_proxy_headers: bool = False,
    *,
    activity: Activity | None = None,
) -> Router:
    api = Router()

    async def caller(request: Request) -> Principal:
        who = await accounts.authenticate(_bearer(request))
        request.who = who  # for the access log
        return who

    def client(request: Request) -> str:
        return client_address(
            request.headers.get("x-forwarded-for"), request.client[0], trust_proxy_headers
        )

    # -- accounts ------------------------------------------------------------------------------

    @api.post("/api/auth/register")
    async def register(request: Request) -> Response:
        form = inputs.parse_json(inputs.Credentials, request.body)
        login = await accounts.register(form, client(request))
        return json_response(_login_body(login), 201)

    @api.post("/api/auth/login")
    async def login(request: Request) -> Response:
        form = inputs.parse_json(inputs.Credentials, request.body)
        login = await accounts.login(form, client(request))
        return json_response(_login_body(login))

    @api.post("/api/auth/logout")
    async def logout(request: Request) -> Response:
        await accounts.logout(await caller(request))
        return Response(204)

    @api.get("/api/me")
    async def me(request: Request) -> Response:
        return json_response({"user": (await accounts.me(await caller(request))).to_json()})

    @api.get("/api/sessions")
    async def sessions(request: Request) -> Response:
        return json_response({"sessions": await accounts.sessions(await caller(request))})

    @api.delete("/api/sessions/<session_id>")
    async def revoke_session(request: Request, session_id: str) -> Response:
        await accounts.revoke(await caller(request), session_id)
        return Response(204)

    @api.delete("/api/sessions")
    async def revoke_other_sessions(request: Request) -> Response:
        """Revoke every session of the caller but the current one."""
        revoked = await accounts.revoke_others(await caller(request))
        return json_response({"revoked": revoked})

    # -- todos ---------------------------------------------------------------------------------

    @api.get("/api/todos")
    async def list_todos(request: Request) -> Response:
        who = await caller(request)
        query = request.args.get("q") or None
        if query is not None and len(query) > MAX_QUERY:
            raise _invalid("q", f"at most {MAX_QUERY} characters")
        if query is not None and "\x00" in query:  # PostgreSQL text cannot hold it: not a 500
            raise _invalid("q", "may not contain the NUL character")
        cursor = request.args.get("cursor") or None
        if cursor is not None and len(cursor) > MAX_CURSOR:
            raise _invalid("cursor", "not a cursor from this list")
        page = await todos.list(
            who,
            done=_bool_arg(request, "done"),
            query=query,
            limit=_int_arg(request, "limit", 50, 1, MAX_PAGE),
            cursor=cursor,
        )
        return json_response({
            "items": [t.to_json() for t in page.items],
            "next_cursor": page.next_cursor,
            "rev": page.rev,
        })

    @api.post("/api/todos")
    async def create_todo(request: Request) -> Response:
        who = await caller(request)
        form = inputs.parse_json(inputs.NewTodo, request.body)
        result = await todos.create(who, form, _idempotency_key(request))
        return _todo_response(result.change, 201)

    @api.get("/api/todos/<todo_id>")
    async def get_todo(request: Request, todo_id: str) -> Response:
        todo = await todos.get(await caller(request), todo_id)
        return json_response({"todo": todo.to_json()})

    @api.patch("/api/todos/<todo_id>")
    async def update_todo(request: Request, todo_id: str) -> Response:
        who = await caller(request)
        form = inputs.parse_json(inputs.TodoChanges, request.body)
        result = await todos.update(who, todo_id, form, _idempotency_key(request))
        return _todo_response(result.change, 200)

    @api.delete("/api/todos/<todo_id>")
    async def delete_todo(request: Request, todo_id: str) -> Response:
        who = await caller(request)
        if_rev = _int_arg(request, "if_rev", -1, 0, 2**62)
        await todos.delete(
            who,
            todo_id,
            if_rev=None if if_rev < 0 else if_rev,
            idempotency_key=_idempotency_key(request),
        )
        return Response(204)

    @api.get("/api/changes")
    async def changes(request: Request) -> Response:
        who = await caller(request)
        since = _int_arg(request, "since", 0, 0, 2**62)
        batch = await todos.changes(who, since, limit=_int_arg(request, "limit", 500, 1, MAX_CHANGES))
        if batch.resets(since):
            # Deletes after ``since`` were forgotten, or ``since`` is not from this server's
            # history: the reader must refetch everything (as /ws says with ``reset``).
            return json_response({"reset": True, "changes": [], "rev": batch.rev, "more": False})
        return json_response({
            "changes": [c.to_json() for c in batch.changes],
            "rev": batch.rev,
            "more": batch.more,
        })

    # -- activity and analytics (the audit log) ------------------------------------------------

    if activity is not None:

        @api.get("/api/activity")
        async def recent_activity(request: Request) -> Response:
            """The caller's own audit trail, newest first."""
            who = await caller(request)
            entries = await activity.recent(who, _int_arg(request, "limit", 50, 1, MAX_ACTIVITY))
            return json_response({"entries": [e.to_json() for e in entries]})

        @api.get("/api/analytics/summary")
        async def analytics_summary(request: Request) -> Response:
            who = await caller(request)
            days = _int_arg(request, "days", 7, 1, MAX_DAYS)
            return json_response(await activity.summary(who, days))

    return api
