"""Response hardening: security headers on every response, and CORS for an allow-list.

CORS: only origins in ``Settings.cors_origins`` get ``Access-Control-Allow-Origin`` (echoed,
with ``Vary: Origin``); preflights from them are answered 204; nobody else gets any CORS
header, so browsers keep other sites' scripts out. Tokens travel in the Authorization
header, never cookies, so no credentials mode is needed.
"""

from __future__ import annotations

from quart import Quart, Response, request

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"
ALLOWED_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, Idempotency-Key"
PREFLIGHT_MAX_AGE = "600"


def parse_origins(raw: str) -> frozenset[str]:
    return frozenset(o.strip().rstrip("/") for o in raw.split(",") if o.strip())


def install_security(app: Quart, cors_origins: frozenset[str]) -> None:
    @app.before_request
    async def preflight() -> Response | None:
        if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
            return Response("", status=204)
        return None

    @app.after_request
    async def harden(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if response.content_type and response.content_type.startswith("application/json"):
            response.headers.setdefault("Content-Security-Policy", API_CSP)
            response.headers.setdefault("Cache-Control", "no-store")
        origin = request.headers.get("Origin")
        if origin is not None and origin.rstrip("/") in cors_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
            response.headers.add("Vary", "Origin")
        return response
