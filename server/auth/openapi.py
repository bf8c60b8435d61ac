"""The published schema (``/openapi.json``) says every answer an operation can give, as the server gives it.

FastAPI documents 200 and its own 422 shape (``detail`` as a list), which is not what this server answers:
every error here is ``{"detail": "...", "errors": [{"field", "error"}]}`` (``errors`` when a field is to blame).
:func:`install_openapi` rewrites each operation under ``/api/`` and ``/dashboard/api/`` once, when the schema is
first asked for: 400 (unreadable body, operations with one), 401 (no or unknown token), 403 (role too low),
404 (operations with a path parameter), 413 (a body too large, operations with one), 422 (a field out of
bounds, named), 429 (rate limit or lock-out, with ``Retry-After``), all with :class:`ErrorBody`.
"""

from __future__ import annotations

from typing import Any

from fastapi import Response
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from .guard import GUARDED


class FieldProblem(BaseModel):
    field: str = Field(description="the culprit: a query or path parameter, a body field (dotted), a CSV column")
    error: str


class ErrorBody(BaseModel):
    """Every error answer of the API (docs/api.md): ``detail`` says what is wrong in a sentence; ``errors`` names
    each culprit field when one is to blame; ``reason`` is a code for refusals a client may act on (commands:
    ``rate_limited``, ``pending``...)."""

    detail: str
    errors: list[FieldProblem] | None = None
    reason: str | None = None


_REF = {"$ref": "#/components/schemas/ErrorBody"}
_ERRORS: dict[str, str] = {
    "400": "The request body could not be read (not JSON, not UTF-8)",
    "401": "No bearer token, or an unknown or revoked one",
    "403": "The token's role may not do this",
    "404": "What the path names does not exist",
    "413": "The request body is larger than this operation takes (32 MiB; 512 MiB for an update package)",
    "422": "A parameter or body field is invalid or out of bounds: `errors` names it",
    "429": "Too many requests with this token or from this address, or the address is locked out after too many "
           "requests without a valid token: wait `Retry-After` seconds",
}


def _error(code: str) -> dict[str, Any]:
    out: dict[str, Any] = {"description": _ERRORS[code], "content": {"application/json": {"schema": _REF}}}
    if code == "429":
        out["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
    return out


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (FieldProblem, ErrorBody):
        comps[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for path, ops in schema.get("paths", {}).items():
        if not path.startswith(GUARDED):
            continue
        for op in ops.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            codes = ["401", "403", "422", "429"]
            if "{" in path:
                codes.append("404")
            if "requestBody" in op:
                codes += ["400", "413"]
            for code in codes:
                given = responses.get(code, {})
                entry = _error(code)
                if given.get("description") and code not in ("422",):
                    entry["description"] = given["description"]
                responses[code] = entry
    for name in ("HTTPValidationError", "ValidationError"):
        comps.pop(name, None)
    return schema


def install_openapi(app: Any) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            app.openapi_schema = document_errors(schema)
        return app.openapi_schema  # type: ignore[no-any-return]

    app.openapi = openapi


class Open(BaseModel):
    """A documented answer: the fields named are checked, more may follow (the API adds fields over time)."""

    model_config = ConfigDict(extra="allow")


def answers(model: type[BaseModel], description: str = "OK") -> dict[str, Any]:
    """Route keywords that publish ``model`` as the 200 answer without filtering or re-validating what the
    route returns (the routes return plain dicts or pre-encoded JSON; schemathesis checks the two agree)."""
    return {"response_model": None, "responses": {200: {"model": model, "description": description}}}


def answers_file(*media: str, description: str = "The file") -> dict[str, Any]:
    return {"response_model": None, "response_class": Response,
            "responses": {200: {"description": description,
                                "content": {m: {"schema": {"type": "string"}} for m in media}}}}


def answers_upload(model: type[BaseModel], media: dict[str, str], description: str = "OK") -> dict[str, Any]:
    """:func:`answers` for an operation whose body is a file read as it comes (``media``: type -> what it is)."""
    out = answers(model, description)
    out["openapi_extra"] = {"requestBody": {"required": True, "content": {
        m: {"schema": {"type": "string", "format": "binary"}} for m in media}, "description": "; ".join(f"{m}: {w}" for m, w in media.items())}}
    return out
