"""No N+1: a request costs a fixed number of store calls, however many items its lists hold
and however many of its fields need the caller. Runs the engine in-process over the real
PostgreSQL store, counting the calls that reach it."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from nursery.api.graphql.context import Caller, Context
from nursery.api.graphql.engine import Engine, GraphQLRequest, Operation
from nursery.api.graphql.schema import build_schema
from nursery.app import Services, open_services
from nursery.config import Settings
from nursery.service import inputs
from nursery.service.accounts import Accounts, Login
from nursery.service.todos import Todos
from nursery.stores.base import Store
from tests.harness import UNLIMITED

SECRET = "batching-test-secret"


def count_calls(store: Any) -> Counter[str]:
    """Count, from now on, the calls to each operation of ``store`` (whoever holds it)."""
    calls: Counter[str] = Counter()
    for name in OPERATIONS:
        operation = getattr(store, name)

        async def counted(*args: Any, _name: str = name, _operation: Any = operation, **kwargs: Any) -> Any:
            calls[_name] += 1
            return await _operation(*args, **kwargs)

        setattr(store, name, counted)
    return calls


OPERATIONS = [name for name in dir(Store) if not name.startswith("_") and name not in {"aclose"}]


@pytest.fixture
async def services(database_url: str) -> AsyncIterator[Services]:
    settings = Settings(database_url=database_url).replace(**UNLIMITED)
    async with open_services(settings, database_url, SECRET) as services:
        yield services


async def run(engine: Engine, accounts: Accounts, todos: Todos, token: str, query: str) -> dict[str, Any]:
    operation = engine.prepare(GraphQLRequest(query))
    assert isinstance(operation, Operation), operation
    result = await engine.execute(operation, Context(accounts, todos, Caller(accounts, token)))
    assert "errors" not in result, result
    data: dict[str, Any] = result["data"]
    return data


async def test_a_request_costs_one_store_call_per_root_field_and_one_authentication(services: Services) -> None:
    with trio.fail_after(20):
        accounts, todos = services.accounts, services.todos
        calls = count_calls(services.store)
        engine = Engine(build_schema())
        login: Login = await accounts.register(inputs.Credentials(email="batch@example.com", password="long enough pw"))
        who = await accounts.authenticate(login.token)
        for i in range(60):
            await todos.create(who, inputs.NewTodo(title=f"t{i}", tags=["a", "b"]))
        for device in ("phone", "tablet"):
            await accounts.login(inputs.Credentials(email="batch@example.com", password="long enough pw", device=device))

        calls.clear()
        data = await run(engine, accounts, todos, login.token, """{
          me { id email }
          sessions { id device current online }
          first: todos(first: 50) { nodes { id title tags rev createdAt } pageInfo { endCursor } rev }
          done: todos(filter: {done: true}) { nodes { id } }
          changes(since: 0) { changes { rev op todo { id title tags } } rev more }
        }""")
        assert len(data["first"]["nodes"]) == 50 and len(data["changes"]["changes"]) == 60
        assert len(data["sessions"]) == 3
        # at most one authentication (none when the session cache already knows the session)
        assert calls.pop("live_session", 0) <= 1
        assert calls == Counter(get_user=1, list_sessions=1, list_todos=2, changes_since=1)

        # Twice the items: the same calls.
        calls.clear()
        await run(engine, accounts, todos, login.token,
                  "{ todos(first: 200) { nodes { id title notes done due tags rev createdAt updatedAt } } }")
        assert calls.pop("live_session", 0) <= 1
        assert calls == Counter(list_todos=1)
