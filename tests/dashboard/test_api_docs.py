"""/docs (Swagger UI) and /redoc (ReDoc) work without internet: a real Chromium that may reach nothing but the
server shows the API's operations, and every file either page asked for came from the server itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dashboard.cdp import Browser, chromium_path
from tests.fleet import Broker, Pki, Server

OUTSIDE = ["*://cdn.jsdelivr.net/*", "*://unpkg.com/*", "*://fonts.googleapis.com/*", "*://fonts.gstatic.com/*",
           "*://fastapi.tiangolo.com/*", "*://*.cloudflare.com/*"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if chromium_path() is None:
        pytest.skip("chromium is not installed (Debian package 'chromium'; ./dev installs it)")
    root: Path = tmp_path_factory.mktemp("apidocs")
    pki = Pki(root / "pki")
    broker = Broker(pki, root / "broker").start()
    srv = Server(pki, broker, root / "server").start()
    try:
        yield srv
    finally:
        srv.stop()
        broker.stop()


def _open_offline(server: Server, path: str) -> tuple[Browser, str]:
    b = Browser()
    b.call("Network.enable")
    b.call("Network.setBlockedURLs", urls=OUTSIDE)
    base = f"http://127.0.0.1:{server.http_port}"
    b.goto(base + path)
    return b, base


def _requested(b: Browser) -> list[str]:
    return [e["params"]["request"]["url"] for e in b.events if e.get("method") == "Network.requestWillBeSent"]


def test_swagger_ui_shows_the_operations_offline(server: Server) -> None:
    b, base = _open_offline(server, "/docs")
    try:
        n = b.wait("document.querySelectorAll('.opblock').length", timeout=30, what="Swagger UI's operations")
        ops = sum(len(v) for v in server.get("/openapi.json").json()["paths"].values())
        assert n == ops >= 40
        assert b.eval("document.querySelector('.opblock-summary-path').textContent").startswith("/")
        outside = [u for u in _requested(b) if not u.startswith(base) and not u.startswith("data:")]
        assert outside == [], f"asked the internet for {outside}"
    finally:
        b.close()


def test_redoc_shows_the_operations_offline(server: Server) -> None:
    b, base = _open_offline(server, "/redoc")
    try:
        b.wait("document.querySelectorAll('[data-section-id^=\"operation/\"], [id^=\"operation/\"]').length > 20",
               timeout=60, what="ReDoc's operations")
        outside = [u for u in _requested(b) if not u.startswith(base) and not u.startswith(("data:", "blob:"))]
        assert outside == [], f"asked the internet for {outside}"
    finally:
        b.close()


def test_assets_are_the_packaged_files_and_nothing_else_is_served(server: Server) -> None:
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"):
        r = server.get(f"/docs-assets/{name}")
        assert r.status_code == 200 and len(r.content) > 100, name
    assert server.get("/docs-assets/..%2Fcore.py").status_code == 404
    assert server.get("/docs-assets/core.py").status_code == 404
    page = server.get("/docs").text
    assert "cdn.jsdelivr.net" not in page and "/docs-assets/swagger-ui-bundle.js" in page
