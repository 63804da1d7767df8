"""The GraphQL schema: the REST model of docs/api.md in GraphQL terms, and its binding.

Names are camelCase in GraphQL and snake_case in Python (Ariadne converts field, argument and
input names), so the domain's dataclasses and ``to_json`` dicts resolve as they are.
Revisions are ``Int`` (32-bit in GraphQL): 2 billion changes per user is out of reach.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ariadne import EnumType, ScalarType, make_executable_schema
from graphql import GraphQLSchema, StringValueNode, ValueNode

from nursery.models import iso

from .resolvers import bindables as query_and_mutation_bindables
from .subscriptions import bindables as subscription_bindables

SDL = '''
"""
An instant, as ISO 8601 text with a zone offset ("2031-05-06T09:30:00Z"). A value without an
offset is taken as UTC. As input, a due date may also be a day alone ("2031-05-06"): that day,
00:00 UTC.
"""
scalar DateTime

type Query {
  "The caller's user."
  me: User
  "The caller's live sessions (one per device), oldest first."
  sessions: [Session!]
  """
  The caller's todos, oldest first, a page at a time (at most 200). Pass the page's
  `pageInfo.endCursor` as `after` for the next page; the pages never skip nor repeat a todo
  however many writes happen in between.
  """
  todos(filter: TodoFilter, first: Int = 50, after: String): TodoConnection
  "One of the caller's todos; `not_found` if it is not the caller's."
  todo(id: ID!): Todo
  """
  Pull sync: the latest state of every todo changed after revision `since`, in revision
  order. `since: 0` is the whole retained history. `reset: true` means `since` is older than
  the retention horizon, or above the current revision (not from this server's history):
  refetch everything.
  """
  changes(since: Int = 0, limit: Int = 500): ChangeBatch
}

type Mutation {
  "Create an account and a first session (device); the token authenticates as it."
  register(input: CredentialsInput!): AuthPayload
  "Open a new session (device)."
  login(input: CredentialsInput!): AuthPayload
  "Revoke the calling session."
  logout: Boolean
  "Revoke one of the caller's sessions: its live connections close everywhere."
  revokeSession(id: ID!): Boolean
  "Revoke every session of the caller but the calling one; returns how many."
  revokeOtherSessions: Int
  """
  `idempotencyKey`: a retry with the same key (after a timeout) returns the first result and
  changes nothing, like REST's Idempotency-Key header.
  """
  createTodo(input: NewTodoInput!, idempotencyKey: String): Todo
  "Change the given fields only. With `ifRev`, `conflict` unless the todo is at that revision."
  updateTodo(id: ID!, input: TodoChangesInput!, ifRev: Int, idempotencyKey: String): Todo
  "Delete (a tombstone keeps the revision for sync). Returns the change it made."
  deleteTodo(id: ID!, ifRev: Int, idempotencyKey: String): Change
}

type Subscription {
  """
  The caller's todo changes, with /ws's guarantee. First a HEAD event (the current revision),
  then, if `since` is given, every change after it, then live changes: revisions strictly
  increase, none is skipped or repeated. Resume after a reconnect with the last `rev`
  applied. A RESET event means `since` is past retention: refetch, then go on from its `rev`.
  `since: null` (default) is live from now.
  """
  todoChanged(since: Int): TodoEvent!
  "Sessions created and revoked, and which sessions are online (connected), live."
  sessionEvents: SessionEvent!
}

type User {
  id: ID!
  email: String!
  createdAt: DateTime!
}

type Session {
  id: ID!
  device: String!
  createdAt: DateTime!
  lastSeenAt: DateTime!
  "Whether this is the calling session."
  current: Boolean!
  "Whether this session has a live connection (websocket) to any instance."
  online: Boolean!
}

type AuthPayload {
  user: User!
  session: Session!
  "Send as `Authorization: Bearer <token>`, or in `connection_init` over the websocket."
  token: String!
}

type Todo {
  id: ID!
  title: String!
  notes: String!
  done: Boolean!
  due: DateTime
  tags: [String!]!
  "The revision of the todo's last change."
  rev: Int!
  createdAt: DateTime!
  updatedAt: DateTime!
}

input TodoFilter {
  done: Boolean
  "Text to find in the title or notes, any case."
  q: String
}

type TodoConnection {
  nodes: [Todo!]!
  pageInfo: PageInfo!
  "The revision this page reflects: subscribe with `todoChanged(since: rev)` to follow on."
  rev: Int!
}

type PageInfo {
  hasNextPage: Boolean!
  "The cursor of the next page (`after`); null on the last page."
  endCursor: String
}

enum ChangeOp {
  UPSERT
  DELETE
}

type Change {
  rev: Int!
  op: ChangeOp!
  id: ID!
  "The todo as of this revision; null for DELETE."
  todo: Todo
}

type ChangeBatch {
  changes: [Change!]!
  "The revision reached: the next `since`."
  rev: Int!
  "More changes follow: ask again with `since: rev`."
  more: Boolean!
  reset: Boolean!
}

enum TodoEventKind {
  HEAD
  CHANGE
  RESET
}

type TodoEvent {
  kind: TodoEventKind!
  rev: Int!
  "For CHANGE."
  change: Change
}

enum SessionEventKind {
  CREATED
  REVOKED
  PRESENCE
}

type SessionEvent {
  kind: SessionEventKind!
  "For CREATED and REVOKED."
  session: Session
  "For PRESENCE: the ids of the sessions online now."
  online: [ID!]
}

input CredentialsInput {
  email: String!
  password: String!
  device: String
}

input NewTodoInput {
  title: String!
  notes: String
  done: Boolean
  due: DateTime
  tags: [String!]
}

"Only the fields given change; `due: null` clears the due date."
input TodoChangesInput {
  title: String
  notes: String
  done: Boolean
  due: DateTime
  tags: [String!]
}
'''

date_time = ScalarType("DateTime")


@date_time.serializer
def _serialize(value: Any) -> str | None:
    return iso(value) if isinstance(value, datetime) else value  # to_json dicts hold text


@date_time.value_parser
def _parse_value(value: Any) -> str:
    # Kept as text: ``service.inputs`` parses it, so a bad date is REST's invalid_input
    # (with the field named), not a type error.
    if not isinstance(value, str):
        raise TypeError("DateTime must be ISO 8601 text")
    return value


@date_time.literal_parser
def _parse_literal(node: ValueNode, variables: Any = None) -> str:
    if not isinstance(node, StringValueNode):
        raise TypeError("DateTime must be ISO 8601 text")
    return node.value


def build_schema() -> GraphQLSchema:
    return make_executable_schema(
        SDL,
        date_time,
        EnumType("ChangeOp", {"UPSERT": "upsert", "DELETE": "delete"}),
        EnumType("SessionEventKind", {"CREATED": "created", "REVOKED": "revoked",
                                      "PRESENCE": "presence"}),
        *query_and_mutation_bindables,
        *subscription_bindables,
        convert_names_case=True,
    )
