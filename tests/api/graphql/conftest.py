"""``gql``: GraphQL over HTTP against the ``api`` instance (tests/api/conftest.py)."""

from __future__ import annotations

import pytest

from tests.api.graphql.support import Gql
from tests.api.support import Api


@pytest.fixture
def gql(api: Api) -> Gql:
    return Gql(api)
