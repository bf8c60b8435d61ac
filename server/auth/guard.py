"""The API's front door (issue 12): rate limits and lock-out (:mod:`.limits`), hostile input screened before any
route sees it, and the published schema that says so (:mod:`.openapi`).

``install(app)`` adds all of it; it must run after every other middleware is added (it is then the outermost,
so a refused request never reaches the audit middleware or a route).

Screening, for every request under ``/api/`` and ``/dashboard/api/`` (422 naming the field):

* a control character (NUL, newline...) in the path or in a query parameter's name or value;
* a query parameter longer than :data:`MAX_PARAM` characters, a path longer than :data:`MAX_PATH`, more than
  :data:`MAX_PARAMS` query parameters;
* a body larger than :data:`MAX_BODY` (:data:`MAX_PACKAGE` for an update package): 413, before it is read when
  its length is declared, as soon as it grows past the limit when it is not.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any
from urllib.parse import parse_qsl

from .limits import AuditFlusher, Limiter, token_hash

log = logging.getLogger(__name__)

GUARDED = ("/api/", "/dashboard/api/")
MAX_BODY = 32 * 1024 * 1024  # a registry import of 100,000 units is ~15 MB of CSV
MAX_PACKAGE = 512 * 1024 * 1024  # POST /api/v1/packages: an update package
MAX_PATH = 1024
MAX_PARAM = 1000
MAX_PARAMS = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def error_body(field: str, message: str) -> bytes:
    return json.dumps({"detail": f"{field}: {message}", "errors": [{"field": field, "error": message}]},
                      ensure_ascii=False).encode()


def screen(path: str, query: bytes) -> tuple[str, str] | None:
    """(field, message) of the first hostile part of the request line, or None."""
    if len(path) > MAX_PATH:
        return "path", f"longer than {MAX_PATH} characters"
    if _CONTROL.search(path):
        return "path", "contains a control character (NUL, newline...)"
    if not query:
        return None
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, max_num_fields=MAX_PARAMS,
                          encoding="utf-8", errors="replace")
    except ValueError:
        return "query", f"more than {MAX_PARAMS} parameters"
    for name, value in pairs:
        shown = name[:40] if not _CONTROL.search(name) else "query"
        if _CONTROL.search(name):
            return "query", "a parameter name contains a control character"
        if _CONTROL.search(value):
            return shown, "contains a control character (NUL, newline...)"
        if len(value) > MAX_PARAM:
            return shown, f"longer than {MAX_PARAM} characters"
    return None


class ApiGuard:
    def __init__(self, app: Any, settings: Any) -> None:
        self.app = app
        self.limiter = Limiter(settings.api)
        self.flusher = AuditFlusher(self.limiter)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        path = scope.get("path", "")
        if kind != "http" or not path.startswith(GUARDED):
            await self.app(scope, receive, send)
            return
        app = scope["app"]
        app.state.api_limiter = self.limiter  # read by GET /api/v1/audit/limits
        lim = self.limiter
        client = scope.get("client")
        address = client[0] if client else ""
        th = token_hash(scope.get("headers", []))
        left = lim.lock_left(address, th)
        if left > 0:
            lim.locked_refused += 1
            await _refuse(send, 429, "client", f"too many requests without a valid token from {address}: locked out "
                          f"for {math.ceil(left)} s more", left)
            return
        wait = lim.tokens.take(th, lim.mono()) if th is not None else 0.0
        if wait > 0:
            lim.rate_limited += 1
            await _refuse(send, 429, "Authorization", f"more than {lim.cfg.burst} requests at once or "
                          f"{lim.cfg.rate_per_s:g} a second with this token; retry after {math.ceil(wait)} s", wait)
            return
        wait = lim.addresses.take(address, lim.mono())
        if wait > 0:
            lim.rate_limited += 1
            await _refuse(send, 429, "client", f"more than {lim.cfg.address_burst} requests at once or "
                          f"{lim.cfg.address_rate_per_s:g} a second from {address}; retry after {math.ceil(wait)} s",
                          wait)
            return
        bad = screen(path, scope.get("query_string", b""))
        if bad is not None:
            await _refuse(send, 422, *bad)
            return
        limit = MAX_PACKAGE if path.rstrip("/") == "/api/v1/packages" else MAX_BODY
        declared = _content_length(scope.get("headers", []))
        if declared is not None and declared > limit:
            await _refuse(send, 413, "body", f"{declared} bytes is more than the {limit} this operation takes")
            return
        receive = _capped(receive, limit)
        status: list[int] = []

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        await self.app(scope, receive, send_status)
        code = status[0] if status else 500
        if code == 401:
            if lim.failed(address, path):
                log.warning("API: %s locked out for %.0f s after %d requests without a valid token", address,
                            lim.cfg.lockout_s, lim.cfg.lockout_failures)
                self.flusher.spawn(self.flusher.lockout(app, address))
            self.flusher.schedule(app)
        elif th is not None and code < 500:
            lim.succeeded(th)

    async def _lifespan(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Pass the lifespan through; at shutdown, write the failed sign-ins not yet audited first."""
        app = scope.get("app")

        async def receive_flush() -> Any:
            message = await receive()
            if message.get("type") == "lifespan.shutdown" and app is not None:
                try:
                    await self.flusher.close(app)
                except Exception:
                    log.exception("could not write the failed sign-ins at shutdown")
            return message

        await self.app(scope, receive_flush, send)


async def _refuse(send: Any, status: int, field: str, message: str, retry_after: float | None = None) -> None:
    body = error_body(field, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _capped(receive: Any, limit: int) -> Any:
    """``receive`` that refuses (413, as every error: :class:`ErrorBody`) a body growing past ``limit`` bytes
    without saying its length first (chunked)."""
    seen = 0

    async def capped() -> Any:
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                from fastapi import HTTPException

                raise HTTPException(413, f"body: more than the {limit} bytes this operation takes")
        return message

    return capped


def _beyond_64_bits(value: Any) -> bool:
    try:
        return abs(int(str(value).strip())) >= 2**63
    except ValueError:
        return False


async def out_of_range(request: Any, exc: Exception) -> Any:
    """Safety net behind the declared bounds: a number SQLite cannot hold (``OverflowError``) is the client's
    422, naming the parameter that carried it, not a 500."""
    from fastapi.responses import JSONResponse

    pairs = [*request.path_params.items(), *request.query_params.multi_items()]
    names = [name for name, value in pairs if _beyond_64_bits(value)]
    field = names[0] if names else "request"
    log.warning("%s %s: out of range (%s): %s", request.method, request.url.path, field, exc)
    message = "a number beyond the 64-bit range" if names else f"a value out of range ({exc})"
    return JSONResponse({"detail": f"{field}: {message}", "errors": [{"field": field, "error": message}]},
                        status_code=422)


async def internal_error(request: Any, exc: Exception) -> Any:
    """A failure of the server's own (a 500) answers with the one error body too (docs/api.md), never a bare
    text page; the traceback goes to the log (Starlette logs it after this answer is sent)."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"detail": f"internal error ({type(exc).__name__}): the server's log has the details"},
                        status_code=500)


def install(app: Any) -> None:
    """Limits, screening and the documented error answers; call last in the app factory."""
    from .openapi import install_openapi
    from .router import router as accounts_router
    from .scope import scoped
    from .users import router as users_router

    app.include_router(accounts_router)  # sign-in, sessions and tokens (issue 18)
    app.include_router(users_router)  # managing users (scoped: server/auth/users.py)
    scoped("/api/v1/session", "/api/v1/session/totp", "/api/v1/session/totp/confirm", "/api/v1/session/password")
    app.add_middleware(ApiGuard, settings=app.state.settings)
    app.add_exception_handler(OverflowError, out_of_range)
    app.add_exception_handler(Exception, internal_error)
    install_openapi(app)
