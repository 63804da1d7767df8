"""The contract documents live in the repository and keep up with the code: every route of
/openapi.json is in docs/api.md with its methods, every close code the servers use is in
docs/protocol.md, and the README leads there (not to a file a clone does not have)."""

from __future__ import annotations

import re
from pathlib import Path

from nursery.api.graphql import protocol as graphql_protocol
from nursery.api.openapi import openapi_document
from nursery.pubsub import protocol
from nursery.service.sync import TRY_AGAIN_LATER

ROOT = Path(__file__).resolve().parents[1]
API = (ROOT / "docs" / "api.md").read_text()
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()


def test_every_route_is_documented_with_its_methods() -> None:
    rows = {}
    for line in API.splitlines():
        match = re.match(r"\| ([A-Z, /]+) \| `([^`]+)` \|", line)
        if match:
            rows.setdefault(match.group(2), set()).update(re.split(r"[ ,/]+", match.group(1).strip()))
    for path, operations in openapi_document()["paths"].items():
        assert path in rows, f"{path} is not in docs/api.md"
        assert {method.upper() for method in operations} <= rows[path], path


def test_every_close_code_is_documented() -> None:
    codes = {protocol.RESTARTING, protocol.UNAUTHENTICATED, protocol.TOO_SLOW, protocol.TOO_BIG,
             protocol.BAD_MESSAGE, protocol.RATE_LIMITED, TRY_AGAIN_LATER}
    g = graphql_protocol
    codes |= {g.BAD_MESSAGE, g.UNAUTHORIZED, g.FORBIDDEN, g.SUBPROTOCOL_NOT_ACCEPTABLE,
              g.INIT_TIMEOUT, g.DUPLICATE_ID, g.TOO_MANY_INITS, g.INTERNAL_ERROR}
    documented = {int(code) for code in re.findall(r"^\| (\d{4}) \|", PROTOCOL, re.MULTILINE)}
    assert codes <= documented, codes - documented


def test_the_readme_leads_to_the_docs_in_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "../shared" not in readme
    for link in re.findall(r"\]\((docs/[^)#]+)\)", readme):
        assert (ROOT / link).exists(), link
    assert "docs/api.md" in readme and "docs/protocol.md" in readme
