"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) with their scripts, styles and icon served by this server.

FastAPI's own pages load Swagger UI and ReDoc from a public CDN (and ReDoc its fonts from Google), so without
internet, or from mainland China where those hosts are slow or blocked, ``/docs`` is a blank page. The assets
come from the ``fastapi-offline`` package (MIT; it ships Swagger UI's and ReDoc's released bundles and nothing
else we use), served under ``/docs-assets/``; the pages are FastAPI's own HTML pointed there (decision 022).
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

ASSETS = Path(fastapi_offline.__file__).parent / "static"
_FILES = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8", "swagger-ui.css": "text/css; charset=utf-8",
          "redoc.standalone.js": "text/javascript; charset=utf-8", "favicon.png": "image/png"}
PREFIX = "/docs-assets"


def install(app: FastAPI, openapi_url: str = "/openapi.json") -> None:
    """Serve ``/docs`` and ``/redoc`` from local assets (the app is made with ``docs_url=None, redoc_url=None``)."""
    router = APIRouter(include_in_schema=False)
    title = app.title

    @router.get("/docs")
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{title} · API",
                                   swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{PREFIX}/swagger-ui.css", swagger_favicon_url=f"{PREFIX}/favicon.png")

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=openapi_url, title=f"{title} · API", redoc_js_url=f"{PREFIX}/redoc.standalone.js",
                              redoc_favicon_url=f"{PREFIX}/favicon.png", with_google_fonts=False)

    @router.get(PREFIX + "/{name}")
    async def asset(name: str) -> FileResponse:
        if name not in _FILES:
            raise HTTPException(404, "not found")
        return FileResponse(ASSETS / name, media_type=_FILES[name], headers={"Cache-Control": "max-age=86400"})

    app.include_router(router)
