"""The contract documents live in the repository and keep up with the code: every route of
/openapi.json is in docs/api.md with its methods, every close code the servers use is in
docs/protocol.md, and the README leads there (not to a file a clone does not have)."""

from __future__ import annotations

import re
from pathlib import Path

from nursery.api.openapi import openapi_document
from nursery.protocol import close_codes

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
    """Every code of ``nursery.protocol.close_codes`` (the one module server and clients
    import) has its row in docs/protocol.md."""
    codes = {v for k, v in vars(close_codes).items() if k.isupper() and isinstance(v, int)}
    documented = {int(code) for code in re.findall(r"^\| (\d{4}) \|", PROTOCOL, re.MULTILINE)}
    assert codes <= documented, codes - documented


def test_the_readme_leads_to_the_docs_in_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "../shared" not in readme
    for link in re.findall(r"\]\((docs/[^)#]+)\)", readme):
        assert (ROOT / link).exists(), link
    assert "docs/api.md" in readme and "docs/protocol.md" in readme
