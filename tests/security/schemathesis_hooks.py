"""Schemathesis hooks for ``test_rest_fuzz.py`` (loaded by the CLI via ``SCHEMATHESIS_HOOKS``).

Authenticated operations get a live token. The fuzzer itself ends sessions now and then
(``POST /api/auth/logout``; ``DELETE /api/sessions/{id}`` with an id it read from
``GET /api/sessions``), so a fixed ``Authorization`` header would leave every later case
answered 401 and fuzz nothing. This provider logs in again whenever a response is 401 (and
schemathesis replays that case with the new token); ``/api/auth/login`` and
``/api/auth/register`` are sent without a token, as a client would.

Settings come from the environment: ``NURSERY_FUZZ_BASE`` (the instance's URL),
``NURSERY_FUZZ_EMAIL`` and ``NURSERY_FUZZ_PASSWORD`` (an account made for the run).
"""

from __future__ import annotations

import os
from typing import Any

import requests
import schemathesis

LOGIN_TIMEOUT = 10.0


@schemathesis.auth(refresh_interval=3600, retry_on=[401]).skip_for(
    path_regex=r"^/(api/auth/(login|register)|healthz|readyz)$"
)
class NurseryLogin:
    def get(self, case: Any, context: Any) -> str:
        response = requests.post(
            os.environ["NURSERY_FUZZ_BASE"] + "/api/auth/login",
            json={"email": os.environ["NURSERY_FUZZ_EMAIL"],
                  "password": os.environ["NURSERY_FUZZ_PASSWORD"], "device": "fuzzer"},
            timeout=LOGIN_TIMEOUT,
        )
        response.raise_for_status()
        token: str = response.json()["token"]
        return token

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
