"""The authorization matrix: every REST route, every GraphQL operation and both websockets,
against every credential that must not work, and against another user's ids.

Routes come from the running app's URL map (a route added later is in the matrix at once;
one missing from /openapi.json fails here), GraphQL operations from the schema (an operation
missing from ``OPERATIONS`` fails here). Expected:

- a bad credential (none, malformed, tampered signature, another secret, revoked session,
  logged-out session, expired token): REST 401 ``unauthenticated`` in the JSON error shape;
  GraphQL ``extensions.code`` ``unauthenticated`` and no data; /ws closed 4001 before any
  frame; graphql-transport-ws ``connection_init`` closed 4403 (a ``subscribe`` before it, 4401);
  and the victim's todos and sessions unchanged afterwards;
- another user's ids: 404 ``not_found`` (never 403, never 409: existence is not revealed);
  lists, changes, cursors, idempotency keys and live feeds never carry the victim's data.

Each test collects every problem before failing, so one run shows the whole matrix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio
from graphql import GraphQLObjectType
from trio_websocket import open_websocket_url

import nursery.app
from nursery.api.graphql.schema import build_schema
from nursery.edge import Edge
from tests.harness import hello
from tests.security.world import (
    KINDS,
    Credential,
    World,
    build_world,
    closed_with,
    frame,
    leaks,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

SUBPROTOCOL = "graphql-transport-ws"
PUBLIC_REST = {("POST", "/api/auth/register"), ("POST", "/api/auth/login")}
WRITE_BODY = {"title": "written by an attacker"}

# Every query and mutation that needs a caller: (document, variables). ``$todo`` and
# ``$session`` are filled with ids (the token owner's own, or the victim's).
OPERATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "me": ("{ me { id email createdAt } }", {}),
    "sessions": ("{ sessions { id device current online } }", {}),
    "todos": ("{ todos { nodes { id title notes tags } pageInfo { endCursor } rev } }", {}),
    "todo": ("query($id: ID!) { todo(id: $id) { id title notes } }", {"id": "$todo"}),
    "changes": ("{ changes(since: 0) { changes { rev op id todo { title } } rev more reset } }", {}),
    "logout": ("mutation { logout }", {}),
    "revokeSession": ("mutation($id: ID!) { revokeSession(id: $id) }", {"id": "$session"}),
    "revokeOtherSessions": ("mutation { revokeOtherSessions }", {}),
    "createTodo": ('mutation { createTodo(input: {title: "written by an attacker"}) { id title } }', {}),
    "updateTodo": ('mutation($id: ID!) { updateTodo(id: $id, input: {title: "written by an attacker"}) { id title } }',
                   {"id": "$todo"}),
    "deleteTodo": ("mutation($id: ID!) { deleteTodo(id: $id) { rev op id } }", {"id": "$todo"}),
}
PUBLIC_GRAPHQL = {"register", "login"}  # they authenticate nobody: the matrix does not apply
SUBSCRIPTIONS = {"todoChanged", "sessionEvents"}  # only over the websocket: its init is checked
QUERIES = {"me", "sessions", "todos", "todo", "changes"}


@pytest.fixture
def edges(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Edge]]:
    """The edges of the instances the test starts, to read their routes."""
    created: list[Edge] = []
    original = nursery.app.create_edge

    def capturing(services: Any) -> Any:
        edge = original(services)
        created.append(edge)
        return edge

    monkeypatch.setattr("nursery.server.create_edge", capturing)
    yield created


def api_routes(edge: Edge) -> list[tuple[str, str]]:
    """(method, OpenAPI-style path) of every /api route the edge serves."""
    routes = set()
    for pattern, methods in edge.router.patterns():
        if pattern.startswith("/api/"):
            path = re.sub(r"<([^>]+)>", r"{\1}", pattern)
            routes |= {(m, path) for m in methods}
    return sorted(routes)


def fill(path: str, todo_id: str, session_id: str) -> str:
    """A concrete URL for a route: todo and session parameters get the given ids."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if "todo" in name:
            return todo_id
        if "session" in name:
            return session_id
        raise AssertionError(f"the matrix does not know path parameter {name!r} of {path}: add it")

    return re.sub(r"\{([^}]+)\}", value, path)


def graphql_fields() -> set[str]:
    schema = build_schema()
    names: set[str] = set()
    for root in (schema.query_type, schema.mutation_type, schema.subscription_type):
        assert isinstance(root, GraphQLObjectType)
        names |= set(root.fields)
    return names


def variables_for(template: dict[str, Any], todo_id: str, session_id: str) -> dict[str, Any]:
    values = {"$todo": todo_id, "$session": session_id}
    return {name: values.get(v, v) for name, v in template.items()}


async def graphql(client: httpx.AsyncClient, base: str, query: str, variables: dict[str, Any],
                  headers: dict[str, str], *, get: bool = False) -> httpx.Response:
    if get:
        params = {"query": query, "variables": json.dumps(variables)}
        return await client.get(f"{base}/graphql", params=params, headers=headers)
    return await client.post(f"{base}/graphql", json={"query": query, "variables": variables}, headers=headers)


def rest_problem(r: httpx.Response, status: int, code: str, markers: set[str], what: str) -> str | None:
    """Why ``r`` is not the error expected (None if it is)."""
    if r.status_code != status:
        return f"{what}: {r.status_code} instead of {status}: {r.text[:200]}"
    if found := leaks(r.text, markers):
        return f"{what}: leaks {found}"
    try:
        body = r.json()
        error = body["error"]
        assert set(body) == {"error"} and set(error) == {"code", "message", "details"}
        assert isinstance(error["message"], str) and error["message"]
    except (ValueError, KeyError, TypeError, AssertionError):
        return f"{what}: not the JSON error shape: {r.text[:200]}"
    if not r.headers.get("content-type", "").startswith("application/json"):
        return f"{what}: content-type {r.headers.get('content-type')}"
    if error["code"] != code:
        return f"{what}: code {error['code']!r} instead of {code!r}"
    return None


def graphql_problem(r: httpx.Response, code: str, markers: set[str], what: str) -> str | None:
    """Why ``r`` is not a GraphQL answer whose every error has ``code`` and that holds no data."""
    if r.status_code != 200:
        return f"{what}: HTTP {r.status_code}: {r.text[:200]}"
    if found := leaks(r.text, markers):
        return f"{what}: leaks {found}"
    body = r.json()
    errors = body.get("errors") or []
    codes = {(e.get("extensions") or {}).get("code") for e in errors}
    if not errors or codes != {code}:
        return f"{what}: error codes {codes or None} instead of {code!r}: {r.text[:200]}"
    if any(value is not None for value in (body.get("data") or {}).values()):
        return f"{what}: data {body['data']}"
    return None


# -- bad credentials -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_bad_credentials_are_refused_everywhere(database_url: str, edges: list[Edge], kind: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=10) as client:
            world = await build_world(nursery, database_url, client)
            routes = api_routes(edges[0])
            spec = (await client.get(f"{world.main.url}/openapi.json")).json()["paths"]
            before = await world.victim_state()
            credential = await world.credential(kind)
            problems = check_route_list(routes, spec)
            problems += await rest_refusals(world, credential, routes)
            problems += await graphql_refusals(world, credential)
            problems += await websocket_refusals(world, credential)
            # Nothing was written, deleted or revoked; what was refused stays refused.
            if (after := await world.victim_state()) != before:
                problems.append(f"the victim's todos or sessions changed: {before} -> {after}")
            for token_user in (world.revoked, world.logged_out):
                r = await client.get(f"{world.main.url}/api/me", headers=token_user.headers)
                if r.status_code != 401:
                    problems.append(f"an ended session came back: {r.status_code}")
            assert not problems, "\n".join(problems)
            nursery.cancel_scope.cancel()


def shape(path: str) -> str:
    """A path with its parameters unnamed: /api/todos/{todo_id} and /api/todos/{id} match."""
    return re.sub(r"\{[^}]+\}", "{}", path)


def check_route_list(routes: list[tuple[str, str]], spec: dict[str, Any]) -> list[str]:
    problems = []
    documented = {(m.upper(), shape(p)): op for p, ops in spec.items() for m, op in ops.items()}
    for method, path in routes:
        operation = documented.get((method, shape(path)))
        if operation is None:
            problems.append(f"{method} {path} is served but not in /openapi.json")
        elif (method, path) not in PUBLIC_REST and not operation.get("security"):
            problems.append(f"{method} {path}: /openapi.json does not say it needs a token")
    unknown = graphql_fields() - set(OPERATIONS) - PUBLIC_GRAPHQL - SUBSCRIPTIONS
    if unknown:
        problems.append(f"GraphQL operations missing from the matrix: {sorted(unknown)}")
    return problems


async def rest_refusals(world: World, credential: Credential, routes: list[tuple[str, str]]) -> list[str]:
    problems = []
    # The token owner's own ids: a 404 cannot stand in for the 401.
    todo_id, session_id = world.victim_todos[0]["id"], world.victim_device.session_id
    for method, path in routes:
        if (method, path) in PUBLIC_REST:
            continue
        url = credential.instance.url + fill(path, todo_id, session_id)
        body = WRITE_BODY if method in {"POST", "PATCH"} else None
        for headers in credential.headers:
            r = await world.client.request(method, url, json=body, headers=headers)
            what = f"{credential.kind} REST {method} {path} {str(headers)[:60]}"
            if problem := rest_problem(r, 401, "unauthenticated", world.markers, what):
                problems.append(problem)
    return problems


async def graphql_refusals(world: World, credential: Credential) -> list[str]:
    problems = []
    todo_id, session_id = world.victim_todos[0]["id"], world.victim_device.session_id
    for name, (query, template) in OPERATIONS.items():
        variables = variables_for(template, todo_id, session_id)
        for headers in credential.headers:
            for get in (False, True) if name in QUERIES else (False,):
                r = await graphql(world.client, credential.instance.url, query, variables, headers, get=get)
                what = f"{credential.kind} GraphQL {'GET' if get else 'POST'} {name} {str(headers)[:60]}"
                if problem := graphql_problem(r, "unauthenticated", world.markers, what):
                    problems.append(problem)
    return problems


async def websocket_refusals(world: World, credential: Credential) -> list[str]:
    problems = []
    instance = credential.instance
    for token in credential.tokens:
        async with open_websocket_url(instance.ws_url) as ws:
            hello_frame: dict[str, Any] = {"type": "hello", "since": 0}  # since 0: the whole history
            if token is not None:
                hello_frame["token"] = token
            await ws.send_message(frame(hello_frame))
            code, received = await closed_with(ws)
            if code != 4001 or received:
                problems.append(f"{credential.kind} /ws hello {str(token)[:40]}: closed {code} after {received[:3]}")
    gql_ws = instance.ws_url.removesuffix("/ws") + "/graphql"
    payloads = [{} if t is None else {"token": t} for t in credential.tokens] + credential.headers
    for payload in payloads:
        async with open_websocket_url(gql_ws, subprotocols=[SUBPROTOCOL]) as ws:
            await ws.send_message(frame({"type": "connection_init", "payload": payload}))
            code, received = await closed_with(ws)
            if code != 4403 or received:
                problems.append(f"{credential.kind} graphql-ws init {str(payload)[:60]}: closed {code} after {received[:3]}")
    if credential.kind == "none":
        async with open_websocket_url(gql_ws, subprotocols=[SUBPROTOCOL]) as ws:
            await ws.send_message(frame({"id": "1", "type": "subscribe", "payload": {
                "query": "subscription { todoChanged(since: 0) { kind rev change { id todo { title } } } }"}}))
            code, received = await closed_with(ws)
            if code != 4401 or received:
                problems.append(f"graphql-ws subscribe before init: closed {code} after {received[:3]}")
    return problems


# -- another user's ids --------------------------------------------------------------------------


async def test_another_users_ids_are_404_and_nothing_of_theirs_leaks(database_url: str, edges: list[Edge]) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=10) as client:
            world = await build_world(nursery, database_url, client)
            routes = api_routes(edges[0])
            before = await world.victim_state()
            problems = await rest_foreign_ids(world, routes)
            problems += await graphql_foreign_ids(world)
            problems += await feeds_stay_private(world)
            if (after := await world.victim_state())[0] != before[0]:
                problems.append(f"the victim's todos changed: {before[0]} -> {after[0]}")
            assert not problems, "\n".join(problems)
            nursery.cancel_scope.cancel()


async def rest_foreign_ids(world: World, routes: list[tuple[str, str]]) -> list[str]:
    problems = []
    client, base, attacker, markers = world.client, world.main.url, world.attacker, world.markers
    todo_ids = [t["id"] for t in world.victim_todos]  # live ones and a deleted one
    session_ids = [world.victim.session_id, world.victim_device.session_id, world.revoked.session_id]
    rev = world.victim_todos[0]["rev"]
    for method, path in routes:
        if "{" in path:  # every route that takes an id, with each of the victim's ids
            ids = session_ids if "session" in path else todo_ids
            for victim_id in ids:
                url = base + fill(path, victim_id, victim_id)
                variants: list[dict[str, Any]] = [{}]
                if method == "PATCH":
                    variants = [{"json": WRITE_BODY}, {"json": {**WRITE_BODY, "if_rev": rev}},
                                {"json": {"done": True, "if_rev": rev + 1000}}]
                elif method == "DELETE" and "todo" in path:
                    variants = [{}, {"params": {"if_rev": rev}}, {"params": {"if_rev": rev + 1000}}]
                for variant in variants:
                    r = await client.request(method, url, headers=attacker.headers, **variant)
                    what = f"attacker REST {method} {path} {victim_id} {variant}"
                    if problem := rest_problem(r, 404, "not_found", markers, what):
                        problems.append(problem)
        elif method == "GET":  # every list and view: only the attacker's own
            r = await client.get(base + path, headers=attacker.headers)
            if r.status_code != 200 or leaks(r.text, markers):
                problems.append(f"attacker REST GET {path}: {r.status_code} {leaks(r.text, markers)}")
    secret = world.victim_todos[0]["title"].split()[2]
    for path, params in [("/api/todos", {"q": secret}), ("/api/todos", {"q": "victim"}),
                         ("/api/todos", {"cursor": world.victim_cursor}), ("/api/changes", {"since": 0}),
                         ("/api/todos", {"done": "false", "limit": 200})]:
        r = await client.get(base + path, params=params, headers=attacker.headers)
        if r.status_code not in {200, 422} or leaks(r.text, markers):
            problems.append(f"attacker REST GET {path} {params}: {r.status_code} {leaks(r.text, markers)}")
    # The victim's idempotency key is the victim's: the attacker's request is a new write.
    r = await client.post(f"{base}/api/todos", json={"title": "attacker with a borrowed key"},
                          headers={**attacker.headers, "Idempotency-Key": world.idempotency_key})
    if r.status_code != 201 or r.json()["todo"]["title"] != "attacker with a borrowed key" or leaks(r.text, markers):
        problems.append(f"attacker reusing the victim's Idempotency-Key: {r.status_code} {r.text[:200]}")
    return problems


async def graphql_foreign_ids(world: World) -> list[str]:
    problems = []
    base, headers, markers = world.main.url, world.attacker.headers, world.markers
    rev = world.victim_todos[0]["rev"]
    by_id = {name: spec for name, spec in OPERATIONS.items() if spec[1]}
    for todo in world.victim_todos:
        for session_id in (world.victim_device.session_id,):
            for name, (query, template) in by_id.items():
                r = await graphql(world.client, base, query, variables_for(template, todo["id"], session_id), headers)
                if problem := graphql_problem(r, "not_found", markers, f"attacker GraphQL {name} {todo['id']}"):
                    problems.append(problem)
        for query in ('mutation($id: ID!, $rev: Int) { updateTodo(id: $id, ifRev: $rev, input: {done: true}) { id } }',
                      "mutation($id: ID!, $rev: Int) { deleteTodo(id: $id, ifRev: $rev) { id } }"):
            for if_rev in (rev, rev + 1000):
                r = await graphql(world.client, base, query, {"id": todo["id"], "rev": if_rev}, headers)
                if problem := graphql_problem(r, "not_found", markers, f"attacker GraphQL {query[:30]} ifRev {if_rev}"):
                    problems.append(problem)
    for name in sorted(QUERIES - set(by_id)):
        r = await graphql(world.client, base, OPERATIONS[name][0], {}, headers)
        body = r.json()
        if r.status_code != 200 or "errors" in body or leaks(r.text, markers):
            problems.append(f"attacker GraphQL {name}: {r.status_code} {leaks(r.text, markers)} {r.text[:200]}")
    secret = world.victim_todos[0]["title"].split()[2]
    for query, variables in [
        ("query($q: String) { todos(filter: {q: $q}) { nodes { id title } } }", {"q": secret}),
        ("query($c: String) { todos(after: $c) { nodes { id title } } }", {"c": world.victim_cursor}),
        ('mutation($k: String) { createTodo(input: {title: "attacker with a borrowed key"}, idempotencyKey: $k) { title } }',
         {"k": world.idempotency_key}),
    ]:
        r = await graphql(world.client, base, query, variables, headers)
        if r.status_code != 200 or leaks(r.text, markers):
            problems.append(f"attacker GraphQL {query[:40]}: {r.status_code} {leaks(r.text, markers)}")
        elif "createTodo" in query and r.json()["data"]["createTodo"]["title"] != "attacker with a borrowed key":
            problems.append(f"the victim's idempotency key answered the attacker: {r.text[:200]}")
    return problems


async def feeds_stay_private(world: World) -> list[str]:
    """The attacker's live feeds (/ws from revision 0, todoChanged from 0, sessionEvents)
    carry nothing of the victim's while the victim writes, logs in and revokes."""
    client, base, victim = world.client, world.main.url, world.victim
    gql_ws = world.main.ws_url.removesuffix("/ws") + "/graphql"
    received: list[str | bytes] = []
    markers = set(world.markers)
    async with (open_websocket_url(world.main.ws_url) as ws,
                open_websocket_url(gql_ws, subprotocols=[SUBPROTOCOL]) as gws):
        await hello(ws, world.attacker.token, 0)
        await gws.send_message(frame({"type": "connection_init", "payload": {"token": world.attacker.token}}))
        assert json.loads(await gws.get_message())["type"] == "connection_ack"
        for op_id, query in (("1", "subscription { todoChanged(since: 0) { kind rev change { id op todo { id title notes } } } }"),
                             ("2", "subscription { sessionEvents { kind session { id device } online } }")):
            await gws.send_message(frame({"id": op_id, "type": "subscribe", "payload": {"query": query}}))
        # The victim is busy meanwhile.
        r = await client.post(f"{base}/api/todos", json={"title": "victim live write"}, headers=victim.headers)
        new_id = r.json()["todo"]["id"]
        markers |= {new_id, "victim live write"}
        await client.patch(f"{base}/api/todos/{new_id}", json={"done": True}, headers=victim.headers)
        await client.delete(f"{base}/api/todos/{new_id}", headers=victim.headers)
        r = await client.post(f"{base}/api/auth/login", json={"email": victim.email, "password": victim.password,
                                                               "device": "victim new phone"})
        new_session = r.json()["session"]["id"]
        markers |= {new_session, "victim new phone"}
        await client.delete(f"{base}/api/sessions/{new_session}", headers=victim.headers)
        # Then the attacker writes: once that arrives, anything of the victim's would have too.
        r = await client.post(f"{base}/api/todos", json={"title": "attacker sentinel"}, headers=world.attacker.headers)
        sentinel = r.json()["todo"]["id"]
        with trio.fail_after(5):
            for socket in (ws, gws):
                while sentinel not in (message := await socket.get_message()):
                    received.append(message)
        with trio.move_on_after(0.3):  # and whatever else is already on its way
            while True:
                received.append(await ws.get_message())
    return [f"attacker's live feed carried the victim's {found}: {text[:200]!r}"
            for text in received if (found := leaks(str(text), markers))]
