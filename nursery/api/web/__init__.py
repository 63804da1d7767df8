"""The web client: the live todo page at ``/`` and its static files (``static/``).

The client is plain ES modules, no build step: what is in ``static/`` is what the browser runs.
The files (a few tens of KiB) are read once, when the blueprint is built, and served from
memory.

Caching: asset URLs carry a hash of all the assets (``/static/<version>/app.js``; the modules
import each other relatively, so they all share the prefix), so a browser may keep them for a
year; ``index.html`` itself is revalidated on every load (``no-cache`` + ETag), so a new
deployment is picked up by the next page load. During a rolling deploy a page from one version
can ask an instance of another for its assets: the instance answers with its own file, marked
``no-store``, rather than a 404 that would break the page.

Every response carries a Content-Security-Policy that allows only this origin, plus websocket
connections to the same host (``/ws``): no inline script or style, no third party.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from quart import Blueprint, Response, request
from werkzeug.exceptions import NotFound

STATIC_DIR = Path(__file__).with_name("static")
INDEX = "index.html"
STATIC_PLACEHOLDER = "{{static}}"

ASSET_MAX_AGE = 365 * 86400

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".webmanifest": "application/manifest+json",
    ".png": "image/png",
}

# A Host header we are willing to repeat in the CSP: a name or IP literal and an optional port.
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _asset(body: bytes, name: str) -> Asset:
    content_type = CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")
    return Asset(body, content_type, hashlib.sha256(body).hexdigest()[:20])


def load_assets(directory: Path = STATIC_DIR) -> tuple[str, Asset, dict[str, Asset]]:
    """Read ``directory``: the version (a hash of every asset), the rendered index page, and
    the other assets by file name. Raises ``FileNotFoundError`` when the index is missing."""
    files = {
        path.name: path.read_bytes()
        for path in sorted(directory.iterdir())
        if path.is_file() and not path.name.startswith(".")
    }
    template = files.pop(INDEX).decode()
    digest = hashlib.sha256()
    for name, body in files.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(body).digest())
    version = digest.hexdigest()[:12]
    page = template.replace(STATIC_PLACEHOLDER, f"/static/{version}").encode()
    assets = {name: _asset(body, name) for name, body in files.items()}
    return version, _asset(page, INDEX), assets


def content_security_policy(host: str | None) -> str:
    """Only this origin; websockets only to the host the page came from."""
    connect = "'self'"
    if host and _HOST.match(host):
        connect += f" ws://{host} wss://{host}"
    return "; ".join([
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "manifest-src 'self'",
        f"connect-src {connect}",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


def _respond(asset: Asset, cache_control: str) -> Response:
    etag = f'"{asset.etag}"'
    if etag in request.headers.get("If-None-Match", ""):
        response = Response(b"", status=304)
    else:
        response = Response(asset.body, status=200, content_type=asset.content_type)
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = cache_control
    return response


def web_blueprint() -> Blueprint:
    web = Blueprint("web", __name__)
    version, index, assets = load_assets()

    @web.get("/")
    async def page() -> Response:
        return _respond(index, "no-cache")

    @web.get("/static/<asked_version>/<name>")
    async def static(asked_version: str, name: str) -> Response:
        asset = assets.get(name)
        if asset is None:
            raise NotFound("no such file")
        if asked_version != version:  # another deployment's page: ours, but don't keep it
            return _respond(asset, "no-store")
        return _respond(asset, f"public, max-age={ASSET_MAX_AGE}, immutable")

    @web.after_request
    async def secure(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = content_security_policy(
            request.headers.get("Host")
        )
        for header, value in SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        return response

    return web
