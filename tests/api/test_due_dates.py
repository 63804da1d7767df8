"""A due date given as a day alone (``"2026-12-01"``): accepted by REST and GraphQL alike, as
that day's first instant in UTC (see ``nursery.service.inputs``)."""

from __future__ import annotations

import trio

from tests.api.graphql.support import TODO_FIELDS, Gql
from tests.api.graphql.support import fields_of as gql_fields_of
from tests.api.support import Api, error_of, fields_of

UPDATE = f"""mutation($id: ID!, $input: TodoChangesInput!) {{
  updateTodo(id: $id, input: $input) {{ {TODO_FIELDS} }} }}"""


async def test_rest_takes_a_day_as_its_first_instant_in_utc(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        todo = await api.create(user, "renew passport", due="2026-12-01")
        assert todo["due"] == "2026-12-01T00:00:00Z"
        r = await api.client.patch(f"/api/todos/{todo['id']}", json={"due": "2027-02-28"},
                                   headers=user.headers)
        assert r.status_code == 200, r.text
        assert r.json()["todo"]["due"] == "2027-02-28T00:00:00Z"
        # A full date-time still means that instant.
        r = await api.client.patch(f"/api/todos/{todo['id']}",
                                   json={"due": "2027-03-01T09:30:00+02:00"}, headers=user.headers)
        assert r.json()["todo"]["due"] == "2027-03-01T07:30:00Z"


async def test_rest_refuses_days_that_do_not_exist_and_other_shapes(api: Api) -> None:
    with trio.fail_after(10):
        user = await api.register()
        for due in ["2026-02-30", "2026-12-1", "20261201", "1700000000", "tomorrow", ""]:
            r = await api.client.post("/api/todos", json={"title": "x", "due": due},
                                      headers=user.headers)
            assert fields_of(error_of(r, 422, "invalid_input")) == {"due"}, due
        r = await api.client.post("/api/todos", json={"title": "x", "due": 1700000000},
                                  headers=user.headers)
        assert fields_of(error_of(r, 422, "invalid_input")) == {"due"}
        assert await api.all_todos(user) == []


async def test_graphql_takes_the_same_day_the_same_way(api: Api) -> None:
    gql = Gql(api)
    with trio.fail_after(10):
        user = await gql.register()
        todo = await gql.create(user, "renew passport", due="2026-12-01")
        assert todo["due"] == "2026-12-01T00:00:00Z"
        data = await gql.data(UPDATE, {"id": todo["id"], "input": {"due": "2027-02-28"}}, user)
        assert data["updateTodo"]["due"] == "2027-02-28T00:00:00Z"
        error = await gql.error(UPDATE, {"id": todo["id"], "input": {"due": "2026-02-30"}}, user,
                                code="invalid_input")
        assert gql_fields_of(error) == {"due"}
        # REST reads back what GraphQL wrote, in the same form.
        r = await api.client.get(f"/api/todos/{todo['id']}", headers=user.headers)
        assert r.json()["todo"]["due"] == "2027-02-28T00:00:00Z"
