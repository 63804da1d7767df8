"""GraphQL at /graphql (being built: see the GraphQL issue)."""

from __future__ import annotations

from quart import Blueprint

from nursery.config import Settings
from nursery.pubsub.hub import Hub
from nursery.service.accounts import Accounts
from nursery.service.todos import Todos


def graphql_blueprint(accounts: Accounts, todos: Todos, hub: Hub, settings: Settings) -> Blueprint:
    return Blueprint("graphql", __name__)
