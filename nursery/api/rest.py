"""The REST API (v1) of docs/api.md: auth, sessions, todos, changes; activity and analytics."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from nursery.api.errors import json_dumps
from nursery.errors import InvalidInput
from nursery.service import inputs
from nursery.service.accounts import Accounts, Login, Principal
from nursery.service.activity import MAX_ACTIVITY, MAX_DAYS, Activity
from nursery.service.todos import MAX_CHANGES, MAX_PAGE, Todos

MAX_IDEMPOTENCY_KEY = 200
MAX_QUERY = 200
# Our cursors are ~90 characters; a longer one is not ours, and the decoder need not see it
# (a deeply nested JSON inside one made the JSON parser recurse until it failed).
MAX_CURSOR = 200


def json_response(data: Any, status: int = 200) -> Response:
    return Response(json_dumps(data), status=status, content_type="application/json")


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", details=[{"field": field, "message": message}])


def _int_arg(name: str, default: int, low: int, high: int) -> int:
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


def _bool_arg(name: str) -> bool | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() not in {"true", "false"}:
        raise _invalid(name, "must be true or false")
    return raw.lower() == "true"


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()):
        raise _invalid("Idempotency-Key", f"1 to {MAX_IDEMPOTENCY_KEY} printable characters")
    return key


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _login_body(login: Login) -> dict[str, Any]:
    return {
        "user": login.user.to_json(),
        "session": login.session.to_json(current=True),
        "token": login.token,
    }


def client_address(trust_proxy_headers: bool) -> str:
    """The caller's address; behind our proxy, the one it saw (the last X-Forwarded-For hop,
    which the proxy appended: earlier hops are whatever the client claimed)."""
    if trust_proxy_headers:
        forwarded = request.headers.get("X-Forwarded-For", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return request.remote_addr or "unknown"


def rest_blueprint(
    accounts: Accounts,
    todos: Todos,
    trust_proxy_headers: bool = False,
    *,
    activity: Activity | None = None,
) -> Blueprint:
    api = Blueprint("rest", __name__, url_prefix="/api")

    async def caller() -> Principal:
        return await accounts.authenticate(_bearer())

    async def body(model: type[inputs.M]) -> inputs.M:
        return inputs.parse_json(model, await request.get_data())

    # -- accounts ------------------------------------------------------------------------------

    @api.post("/auth/register")
    async def register() -> Response:
        form = await body(inputs.Credentials)
        login = await accounts.register(form, client_address(trust_proxy_headers))
        return json_response(_login_body(login), 201)

    @api.post("/auth/login")
    async def login() -> Response:
        form = await body(inputs.Credentials)
        login = await accounts.login(form, client_address(trust_proxy_headers))
        return json_response(_login_body(login))

    @api.post("/auth/logout")
    async def logout() -> Response:
        await accounts.logout(await caller())
        return Response("", status=204)

    @api.get("/me")
    async def me() -> Response:
        return json_response({"user": (await accounts.me(await caller())).to_json()})

    @api.get("/sessions")
    async def sessions() -> Response:
        return json_response({"sessions": await accounts.sessions(await caller())})

    @api.delete("/sessions/<session_id>")
    async def revoke_session(session_id: str) -> Response:
        await accounts.revoke(await caller(), session_id)
        return Response("", status=204)

    @api.delete("/sessions")
    async def revoke_other_sessions() -> Response:
        """Revoke every session of the caller but the current one."""
        revoked = await accounts.revoke_others(await caller())
        return json_response({"revoked": revoked})

    # -- todos ---------------------------------------------------------------------------------

    @api.get("/todos")
    async def list_todos() -> Response:
        who = await caller()
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
            done=_bool_arg("done"),
            query=query,
            limit=_int_arg("limit", 50, 1, MAX_PAGE),
            cursor=cursor,
        )
        return json_response({
            "items": [t.to_json() for t in page.items],
            "next_cursor": page.next_cursor,
            "rev": page.rev,
        })

    @api.post("/todos")
    async def create_todo() -> Response:
        who = await caller()
        result = await todos.create(who, await body(inputs.NewTodo), _idempotency_key())
        assert result.change.todo is not None
        return json_response({"todo": result.change.todo.to_json()}, 201)

    @api.get("/todos/<todo_id>")
    async def get_todo(todo_id: str) -> Response:
        todo = await todos.get(await caller(), todo_id)
        return json_response({"todo": todo.to_json()})

    @api.patch("/todos/<todo_id>")
    async def update_todo(todo_id: str) -> Response:
        who = await caller()
        result = await todos.update(who, todo_id, await body(inputs.TodoChanges), _idempotency_key())
        assert result.change.todo is not None
        return json_response({"todo": result.change.todo.to_json()})

    @api.delete("/todos/<todo_id>")
    async def delete_todo(todo_id: str) -> Response:
        who = await caller()
        if_rev = _int_arg("if_rev", -1, 0, 2**62)
        await todos.delete(
            who,
            todo_id,
            if_rev=None if if_rev < 0 else if_rev,
            idempotency_key=_idempotency_key(),
        )
        return Response("", status=204)

    @api.get("/changes")
    async def changes() -> Response:
        who = await caller()
        since = _int_arg("since", 0, 0, 2**62)
        batch = await todos.changes(who, since, limit=_int_arg("limit", 500, 1, MAX_CHANGES))
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

        @api.get("/activity")
        async def recent_activity() -> Response:
            """The caller's own audit trail, newest first."""
            who = await caller()
            entries = await activity.recent(who, _int_arg("limit", 50, 1, MAX_ACTIVITY))
            return json_response({"entries": [e.to_json() for e in entries]})

        @api.get("/analytics/summary")
        async def analytics_summary() -> Response:
            who = await caller()
            return json_response(await activity.summary(who, _int_arg("days", 7, 1, MAX_DAYS)))

    return api
