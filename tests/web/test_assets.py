"""How the page, its service worker and its files are served: cache headers, the CSP,
versions (no browser)."""

from __future__ import annotations

import json
import re

from quart_trio import QuartTrio

from nursery.api.errors import install_error_handlers
from nursery.api.web import (
    STATIC_DIR,
    content_security_policy,
    load_assets,
    web_blueprint,
)


def _app() -> QuartTrio:
    app = QuartTrio(__name__)
    install_error_handlers(app)
    app.register_blueprint(web_blueprint())
    return app


async def test_index_links_versioned_assets_that_exist() -> None:
    client = _app().test_client()
    r = await client.get("/")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.headers["Cache-Control"] == "no-cache"
    html = await r.get_data(as_text=True)
    assert "{{static}}" not in html
    links = set(re.findall(r'(?:src|href)="(/static/[^"]+)"', html))
    assert {link.rsplit("/", 1)[1] for link in links} >= {"app.js", "style.css", "icon.svg"}
    for link in links:
        asset = await client.get(link)
        assert asset.status_code == 200, link
        assert asset.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    js = await client.get(next(link for link in links if link.endswith("/app.js")))
    assert js.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert js.headers["X-Content-Type-Options"] == "nosniff"


def test_every_module_import_resolves_to_a_served_file() -> None:
    assets = load_assets().assets
    for name, asset in assets.items():
        if name.endswith(".js"):
            for imported in re.findall(r'from "\./([^"]+)"', asset.body.decode()):
                assert imported in assets, f"{name} imports missing {imported}"


async def test_conditional_requests_and_other_versions() -> None:
    client = _app().test_client()
    shell = load_assets()
    version = shell.version
    again = await client.get("/", headers={"If-None-Match": f'"{shell.index.etag}"'})
    assert again.status_code == 304
    first = await client.get(f"/static/{version}/app.js")
    etag = first.headers["ETag"]
    cached = await client.get(f"/static/{version}/app.js", headers={"If-None-Match": etag})
    assert cached.status_code == 304 and await cached.get_data() == b""
    # A page of another deployment gets our file, but nobody keeps it.
    other = await client.get("/static/0123456789ab/app.js")
    assert other.status_code == 200 and other.headers["Cache-Control"] == "no-store"
    missing = await client.get(f"/static/{version}/nope.js")
    assert missing.status_code == 404
    assert (await missing.get_json())["error"]["code"] == "not_found"
    assert "Content-Security-Policy" in missing.headers


async def test_csp_allows_only_this_origin_and_its_websocket() -> None:
    client = _app().test_client()
    r = await client.get("/", headers={"Host": "todo.example:8080"})
    csp = dict(d.strip().split(" ", 1) for d in r.headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self' ws://todo.example:8080 wss://todo.example:8080"
    assert csp["frame-ancestors"] == "'none'"
    assert "unsafe" not in r.headers["Content-Security-Policy"]


def test_csp_ignores_a_host_header_it_cannot_trust() -> None:
    for host in ["evil.example; script-src *", "a b", "", None, "x:99999999"]:
        assert "connect-src 'self';" in content_security_policy(host)
    assert "ws://[::1]:4000 " in content_security_policy("[::1]:4000")


def test_static_dir_has_no_stray_files() -> None:
    # Everything under static/ is served to anyone: keep it to the client's own files.
    allowed = {".html", ".js", ".css", ".svg", ".png", ".webmanifest"}
    assert {p.suffix for p in STATIC_DIR.iterdir()} <= allowed


async def test_service_worker_is_served_at_the_root_and_caches_this_version() -> None:
    client = _app().test_client()
    shell = load_assets()
    r = await client.get("/sw.js")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert r.headers["Cache-Control"] == "no-cache"  # a new deployment is noticed at once
    assert "Content-Security-Policy" in r.headers
    body = await r.get_data(as_text=True)
    assert f'const VERSION = "{shell.version}";' in body
    cached = json.loads(re.search(r"const SHELL = (\[.*?\]);", body).group(1))  # type: ignore[union-attr]
    assert cached[0] == "/"
    assert set(cached[1:]) == {f"/static/{shell.version}/{name}" for name in shell.assets}
    for url in cached:
        assert (await client.get(url)).status_code == 200, url
    assert (await client.get(f"/static/{shell.version}/sw.js")).status_code == 404


async def test_manifest_names_the_app_and_icons_that_exist() -> None:
    client = _app().test_client()
    shell = load_assets()
    html = await (await client.get("/")).get_data(as_text=True)
    link = re.search(r'<link rel="manifest" href="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    r = await client.get(link)
    assert r.headers["Content-Type"] == "application/manifest+json"
    manifest = json.loads(await r.get_data(as_text=True))
    assert manifest["display"] == "standalone"
    assert manifest["start_url"] == manifest["scope"] == manifest["id"] == "/"
    assert manifest["theme_color"].startswith("#")
    sizes = {icon["sizes"] for icon in manifest["icons"] if icon["type"] == "image/png"}
    assert {"192x192", "512x512"} <= sizes
    assert any(icon.get("purpose") == "maskable" for icon in manifest["icons"])
    for icon in manifest["icons"]:
        png = await client.get(f"/static/{shell.version}/{icon['src']}")
        assert png.status_code == 200 and png.headers["Content-Type"] == icon["type"], icon
        if icon["type"] == "image/png":  # the size it claims is the size it has
            width, height = int.from_bytes((await png.get_data())[16:20]), int.from_bytes(
                (await png.get_data())[20:24])
            assert f"{width}x{height}" == icon["sizes"], icon
