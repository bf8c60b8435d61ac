"""The dashboard's sign-in (issue 18): ``/api/v1/session`` (sign in, who am I, sign out), two-factor enrolment,
replacing one's password, and the auditors' view of tokens. See :mod:`server.auth.accounts`; the users' management
is :mod:`server.auth.users`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ..answers import Page, Time, page, timed
from ..auth.openapi import ErrorBody, Open, answers
from ..registry.models import FieldError
from . import Principal, get_accounts, principal, require
from .accounts import COOKIE, MAX_S, SignInError
from .bounds import Offset

router = APIRouter(prefix="/api/v1", tags=["sign-in"])


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1000)
    code: str = Field("", max_length=40, description="the authenticator's 6 digits, or a recovery code")


class Code(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=40)


class NewPassword(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(min_length=1, max_length=1000, description="the current password (or the one-time one)")
    new_password: str = Field(min_length=1, max_length=1000, description="at least 10 characters")


def _with(route: dict[str, Any], more: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """:func:`answers` route keywords with more documented statuses."""
    return {**route, "responses": {**route["responses"], **more}}


class ScopeOut(Open):
    province: bool
    cities: list[str]
    counties: list[str]


class SessionOut(Open):
    user: str
    role: str
    scope: ScopeOut
    stage: str = Field(description="full; enrol: an administrator who must enrol two-factor before anything else; "
                                   "password: a one-time password to replace (POST /api/v1/session/password) first")
    csrf: str = Field(description="send it back in X-CSRF-Token with every write made with this session")
    expires: Time | None = None


class TotpStart(Open):
    secret: str
    otpauth_uri: str
    qr_svg: str


class RecoveryCodes(Open):
    recovery_codes: list[str]
    note: str


class Ended(Open):
    ended: bool


class PasswordChanged(Open):
    changed: bool
    sessions_ended: int
    note: str


class TokenOut(Open):
    name: str
    role: str
    owner: str
    scope: str
    created: Time | None = None
    expires: Time | None = None
    last_used: Time | None = None
    last_client: str
    revoked_at: Time | None = None


_SIGN_IN = _with(answers(SessionOut), {
    401: {"model": ErrorBody, "description": "Wrong user name, password or code (field: password or code), or the "
                                             "code is needed (field: code)"},
    403: {"model": ErrorBody, "description": "The account is disabled"},
    429: {"model": ErrorBody, "description": "Locked after repeated failures: the message says until when"}})


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


def _refused(err: SignInError) -> FieldError:
    return FieldError(err.field, err.message, err.status)


@router.post("/session", **_SIGN_IN)
async def sign_in(request: Request, response: Response, body: SignIn) -> dict[str, Any]:
    """Sign in with user name, password and (when enrolled; compulsory for admins) a TOTP or recovery code. Sets
    the session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS)."""
    try:
        done = await get_accounts(request.app).sign_in(body.user, body.password, body.code, _client(request))
    except SignInError as err:
        raise _refused(err) from None
    secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "") == "https"
    response.set_cookie(COOKIE, done.cookie, max_age=int(MAX_S), httponly=True, secure=secure, samesite="strict",
                        path="/")
    from .scope import Scope

    return timed({"user": done.user["name"], "role": done.user["role"],
                  "scope": Scope.parse(done.user["scope"]).as_dict(), "stage": done.stage, "csrf": done.csrf,
                  "expires": done.expires}, request.app.state.settings.timezone)  # type: ignore[no-any-return]


@router.get("/session", **answers(SessionOut))
async def who_am_i(request: Request, p: Annotated[Principal, Depends(principal)]) -> dict[str, Any]:
    """The signed-in user (or the token's owner), role, scope, and the session's CSRF token."""
    csrf, stage = "", "full"
    if p.via == "session":
        got = await get_accounts(request.app).session_principal(request.cookies.get(COOKIE, ""))
        if got is not None:
            csrf, stage = got[1], got[2] or "full"
    return {"user": p.user or p.name, "role": p.role, "scope": p.scope.as_dict(), "stage": stage, "csrf": csrf,
            "expires": None}


@router.delete("/session", **_with(answers(Ended), {409: {
    "model": ErrorBody, "description": "Called with an API token, which has no session: revoke the token instead"}}))
async def sign_out(request: Request, response: Response, p: Annotated[Principal, Depends(principal)]
                   ) -> dict[str, Any]:
    """End this session (sign out)."""
    if p.via != "session":
        raise FieldError("session", "a token has no session: revoke it instead (posfleet server token revoke)", 409)
    await get_accounts(request.app).sign_out(p, _client(request))
    response.delete_cookie(COOKIE, path="/")
    return {"ended": True}


def _session_user(p: Principal) -> str:
    if p.via != "session":
        raise FieldError("session", "two-factor is enrolled from a signed-in session", 409)
    return p.user


@router.post("/session/totp", **_with(answers(TotpStart), {409: {
    "model": ErrorBody, "description": "Called with an API token, which has no session to enrol"}}))
async def totp_start(request: Request, p: Annotated[Principal, Depends(principal)]) -> dict[str, Any]:
    """Begin two-factor enrolment: a new secret, its otpauth:// URI and QR code (SVG) for the authenticator app.
    Nothing changes until a code from it is confirmed."""
    return await get_accounts(request.app).start_totp(_session_user(p))  # type: ignore[no-any-return]


_CONFIRM = _with(answers(RecoveryCodes), {409: {"model": ErrorBody, "description": "No enrolment started"}})


@router.post("/session/totp/confirm", **_CONFIRM)
async def totp_confirm(request: Request, body: Code, p: Annotated[Principal, Depends(principal)]) -> dict[str, Any]:
    """Confirm enrolment with a code from the new secret; answers ten recovery codes, shown this once. An
    administrator's enrolment-only session ends: sign in again with the code."""
    _session_user(p)
    try:
        codes = await get_accounts(request.app).confirm_totp(p, body.code, _client(request))
    except SignInError as err:
        raise _refused(err) from None
    return {"recovery_codes": codes, "note": "each code signs in once in place of the authenticator; keep them "
                                             "offline"}


_PASSWORD = _with(answers(PasswordChanged), {
    401: {"model": ErrorBody, "description": "The current password is wrong (field: password)"},
    409: {"model": ErrorBody, "description": "Called with an API token, which has no password"},
    429: {"model": ErrorBody, "description": "Locked after repeated failures: the message says until when"}})


@router.post("/session/password", **_PASSWORD)
async def change_password(request: Request, response: Response, body: NewPassword,
                          p: Annotated[Principal, Depends(principal)]) -> dict[str, Any]:
    """Replace your own password (a one-time password must be, before anything else): the current one, and the
    new one (10 characters or more, not the same). Every session of yours ends, this one too: sign in again. A
    wrong current password counts toward the lock-out."""
    if p.via != "session":
        raise FieldError("session", "a token has no password: sign in as the user to change theirs", 409)
    try:
        ended = await get_accounts(request.app).change_own_password(p, body.password, body.new_password,
                                                                     _client(request))
    except SignInError as err:
        raise _refused(err) from None
    response.delete_cookie(COOKIE, path="/")
    return {"changed": True, "sessions_ended": ended, "note": "sign in again with the new password"}


@router.get("/tokens", **answers(Page[TokenOut]))
async def tokens(request: Request, _p: Annotated[Principal, Depends(require("auditor"))],
                 limit: Annotated[int, Query(ge=1, le=1000)] = 1000, offset: Offset = 0) -> dict[str, Any]:
    """Every API token (never the token): owner, scope, expiry, last use and from where, revocation."""
    rows = await request.app.state.storage.list_tokens()
    return timed(page(rows[offset:offset + limit], len(rows), limit, offset),  # type: ignore[no-any-return]
                 request.app.state.settings.timezone)
