"""The web client: the live todo page at ``/``, its service worker at ``/sw.js``, and its
static files (``static/``).

The client is plain ES modules, no build step: what is in ``static/`` is what the browser runs.
The files (a few tens of KiB) are read once, when the blueprint is built, and served from
memory. It is an installable web app (``manifest.webmanifest``, icons rendered from
``icon.svg`` by ``scripts/make-icons``) that opens and works offline: the service worker keeps
the app shell, the page keeps the user's todos and unsent writes in IndexedDB.

Two files are templates rather than assets: ``index.html`` (``{{static}}`` becomes the
versioned asset prefix) and ``sw.js`` (``{{version}}`` and ``{{shell}}``, the URLs it caches).
The worker is served from ``/sw.js`` because a worker controls only the pages under the path
it was served from, and it must control ``/``; it is revalidated on every load, so that a new
deployment is noticed, and offered to the user as an update (see ``static/sw.js``).

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
import json
import re
from dataclasses import dataclass
from pathlib import Path

from quart import Blueprint, Response, request
from werkzeug.exceptions import NotFound

STATIC_DIR = Path(__file__).with_name("static")
INDEX = "index.html"
WORKER = "sw.js"
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


@dataclass(frozen=True, slots=True)
class Shell:
    """What the blueprint serves: ``version`` (a hash of every file), the rendered page and
    service worker, and the other files by name."""

    version: str
    index: Asset
    worker: Asset
    assets: dict[str, Asset]


def load_assets(directory: Path = STATIC_DIR) -> Shell:
    """Read ``directory``. Raises ``FileNotFoundError`` when the page or the worker is
    missing."""
    files = {
        path.name: path.read_bytes()
        for path in sorted(directory.iterdir())
        if path.is_file() and not path.name.startswith(".")
    }
    digest = hashlib.sha256()
    for name, body in files.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(body).digest())
    version = digest.hexdigest()[:12]
    prefix = f"/static/{version}"
    page = files.pop(INDEX).decode().replace(STATIC_PLACEHOLDER, prefix).encode()
    shell = ["/", *(f"{prefix}/{name}" for name in files if name != WORKER)]
    worker = (
        files.pop(WORKER).decode()
        .replace("{{version}}", version)
        .replace("{{shell}}", json.dumps(shell))
        .encode()
    )
    assets = {name: _asset(body, name) for name, body in files.items()}
    return Shell(version, _asset(page, INDEX), _asset(worker, WORKER), assets)


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
    shell = load_assets()
    version, assets = shell.version, shell.assets

    @web.get("/")
    async def page() -> Response:
        return _respond(shell.index, "no-cache")

    @web.get("/sw.js")
    async def service_worker() -> Response:
        return _respond(shell.worker, "no-cache")

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
