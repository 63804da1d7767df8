"""/openapi.json documents every route the app serves, with valid references."""

from __future__ import annotations

import json
import re

import httpx
import trio

from tests.harness import start_instance


def _refs(node: object) -> set[str]:
    return set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(node)))


async def test_openapi_covers_every_route(database_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient() as client:
            instance = await start_instance(nursery, database_url)
            r = await client.get(f"{instance.url}/openapi.json")
            assert r.status_code == 200
            document = r.json()
            assert document["openapi"].startswith("3.")
            assert _refs(document) <= set(document["components"]["schemas"])
            for path, operations in document["paths"].items():
                url = instance.url + path.replace("{id}", "00000000-0000-0000-0000-000000000000")
                for method in operations:
                    answer = await client.request(method.upper(), url)
                    assert answer.status_code not in {404, 405} or "{id}" in path, (method, path)
                    assert answer.status_code < 500, (method, path, answer.text)
            documented = {(p, m.upper()) for p, ops in document["paths"].items() for m in ops}
            for method, path in [("POST", "/api/auth/register"), ("GET", "/api/changes"),
                                 ("PATCH", "/api/todos/{id}"), ("DELETE", "/api/sessions")]:
                assert (path, method) in documented
            instance.stop()
