"""Query and mutation resolvers: each one authenticates, validates with the models REST uses,
and calls the one service method REST calls. No rule of the product is decided here.

No N+1: every list is one store call that returns whole objects (a page of todos, a batch of
changes, the sessions with their presence), and nested fields read those objects; the
caller is authenticated once per request (``context.Caller``).
"""

from __future__ import annotations

from typing import Any

from ariadne import MutationType, ObjectType, QueryType

from nursery.models import Change, Todo, TodoPage, User
from nursery.service import inputs
from nursery.service.accounts import Login

from . import arguments
from .context import Info, context_of

query = QueryType()
mutation = MutationType()
todo_connection = ObjectType("TodoConnection")

# -- queries ------------------------------------------------------------------------------------


@query.field("me")
async def resolve_me(_: Any, info: Info) -> User:
    context = context_of(info)
    return await context.accounts.me(await context.caller.principal())


@query.field("sessions")
async def resolve_sessions(_: Any, info: Info) -> list[dict[str, object]]:
    context = context_of(info)
    return await context.accounts.sessions(await context.caller.principal())


@query.field("todos")
async def resolve_todos(
    _: Any,
    info: Info,
    filter: dict[str, Any] | None = None,
    first: int | None = None,
    after: str | None = None,
) -> TodoPage:
    context = context_of(info)
    who = await context.caller.principal()
    given = filter or {}
    args = arguments.parse(
        arguments.TodoListArguments,
        done=given.get("done"), q=given.get("q"), first=first, after=after,
    )
    return await context.todos.list(
        who, done=args.done, query=args.q or None, limit=args.first, cursor=args.after or None
    )


@todo_connection.field("nodes")
def resolve_nodes(page: TodoPage, _: Info) -> list[Todo]:
    return page.items


@todo_connection.field("pageInfo")
def resolve_page_info(page: TodoPage, _: Info) -> dict[str, Any]:
    return {"has_next_page": page.next_cursor is not None, "end_cursor": page.next_cursor}


@query.field("todo")
async def resolve_todo(_: Any, info: Info, id: str) -> Todo:
    context = context_of(info)
    return await context.todos.get(await context.caller.principal(), id)


@query.field("changes")
async def resolve_changes(
    _: Any, info: Info, since: int | None = None, limit: int | None = None
) -> dict[str, Any]:
    context = context_of(info)
    who = await context.caller.principal()
    args = arguments.parse(arguments.ChangesArguments, since=since, limit=limit)
    batch = await context.todos.changes(who, args.since, limit=args.limit)
    if batch.resets(args.since):
        # Deletes after ``since`` were forgotten, or ``since`` is not from this history: the
        # reader must refetch everything (REST and /ws say the same).
        return {"changes": [], "rev": batch.rev, "more": False, "reset": True}
    return {"changes": batch.changes, "rev": batch.rev, "more": batch.more, "reset": False}


# -- mutations ----------------------------------------------------------------------------------


def _login_payload(login: Login) -> dict[str, Any]:
    return {"user": login.user, "session": login.session.to_json(current=True), "token": login.token}


@mutation.field("register")
async def resolve_register(_: Any, info: Info, input: dict[str, Any]) -> dict[str, Any]:
    context = context_of(info)
    form = inputs.parse_object(inputs.Credentials, input)
    return _login_payload(await context.accounts.register(form, context.client))


@mutation.field("login")
async def resolve_login(_: Any, info: Info, input: dict[str, Any]) -> dict[str, Any]:
    context = context_of(info)
    form = inputs.parse_object(inputs.Credentials, input)
    return _login_payload(await context.accounts.login(form, context.client))


@mutation.field("logout")
async def resolve_logout(_: Any, info: Info) -> bool:
    context = context_of(info)
    await context.accounts.logout(await context.caller.principal())
    return True


@mutation.field("revokeSession")
async def resolve_revoke_session(_: Any, info: Info, id: str) -> bool:
    context = context_of(info)
    await context.accounts.revoke(await context.caller.principal(), id)
    return True


@mutation.field("revokeOtherSessions")
async def resolve_revoke_other_sessions(_: Any, info: Info) -> int:
    context = context_of(info)
    return await context.accounts.revoke_others(await context.caller.principal())


@mutation.field("createTodo")
async def resolve_create_todo(
    _: Any, info: Info, input: dict[str, Any], idempotency_key: str | None = None
) -> Todo | None:
    context = context_of(info)
    who = await context.caller.principal()
    form = inputs.parse_object(inputs.NewTodo, input)
    options = arguments.parse(arguments.WriteOptions, idempotency_key=idempotency_key)
    result = await context.todos.create(who, form, options.idempotency_key)
    return result.change.todo


@mutation.field("updateTodo")
async def resolve_update_todo(
    _: Any,
    info: Info,
    id: str,
    input: dict[str, Any],
    if_rev: int | None = None,
    idempotency_key: str | None = None,
) -> Todo | None:
    context = context_of(info)
    who = await context.caller.principal()
    # REST takes ``if_rev`` in the body; the same model validates it here.
    body = input if if_rev is None else {**input, "if_rev": if_rev}
    form = inputs.parse_object(inputs.TodoChanges, body)
    options = arguments.parse(arguments.WriteOptions, idempotency_key=idempotency_key)
    result = await context.todos.update(who, id, form, options.idempotency_key)
    return result.change.todo


@mutation.field("deleteTodo")
async def resolve_delete_todo(
    _: Any,
    info: Info,
    id: str,
    if_rev: int | None = None,
    idempotency_key: str | None = None,
) -> Change:
    context = context_of(info)
    who = await context.caller.principal()
    options = arguments.parse(
        arguments.WriteOptions, if_rev=if_rev, idempotency_key=idempotency_key
    )
    result = await context.todos.delete(
        who, id, if_rev=options.if_rev, idempotency_key=options.idempotency_key
    )
    return result.change


bindables = [query, mutation, todo_connection]
