"""Response hardening, for every response the edge writes: security headers, and CORS for
an allow-list.

CORS: only origins in ``Settings.cors_origins`` get ``Access-Control-Allow-Origin`` (echoed,
with ``Vary: Origin``); preflights are answered 204 (with the CORS headers for those origins
only); nobody else gets any CORS header, so browsers keep other sites' scripts out. Tokens
travel in the Authorization header, never cookies, so no credentials mode is needed.
"""

from __future__ import annotations

from nursery.edge.http import Request, Response

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
ALLOWED_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Request-ID"
PREFLIGHT_MAX_AGE = "600"


def parse_origins(raw: str) -> frozenset[str]:
    return frozenset(o.strip().rstrip("/") for o in raw.split(",") if o.strip())


class Hardening:
    def __init__(self, cors_origins: frozenset[str]) -> None:
        self._cors_origins = cors_origins

    def preflight(self, request: Request) -> Response | None:
        """The answer to a CORS preflight, if ``request`` is one."""
        if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
            return Response(204)
        return None

    def apply(self, request: Request, response: Response) -> None:
        for name, value in HEADERS.items():
            response.set_default(name, value)
        content_type = response.header("content-type") or ""
        if content_type.startswith("application/json"):
            response.set_default("Content-Security-Policy", API_CSP)
            response.set_default("Cache-Control", "no-store")
        origin = request.headers.get("origin")
        if origin is not None and origin.rstrip("/") in self._cors_origins:
            response.headers += [
                ("Access-Control-Allow-Origin", origin),
                ("Access-Control-Allow-Methods", ALLOWED_METHODS),
                ("Access-Control-Allow-Headers", ALLOWED_HEADERS),
                ("Access-Control-Max-Age", PREFLIGHT_MAX_AGE),
                ("Vary", "Origin"),
            ]


