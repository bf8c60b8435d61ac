"""User management over HTTP (issue 18; decision 031 "Managing users"): what the dashboard's 用户 page does.

Reading (``GET /api/v1/users``, ``/users/{user}``) is for auditors and administrators; every change for
administrators. Who may manage whom is one rule, :func:`outside`:

* a caller sees and manages the users whose scope lies **within its own** (the province's administrators: every
  user); any other user answers 404 as if it did not exist (a county administrator does not learn who works
  elsewhere);
* it grants only a scope within its own, and so the admin role only within it too (403 naming ``scope``); a county
  of a city-scoped caller lies within it when the registry's institutions place that county in its cities;
* nobody manages their own account here (409): a password is changed at ``POST /api/v1/session/password``, and an
  administrator cannot lock themselves out or raise their own rights.

New users and reset passwords get a one-time password shown once in the answer, good for ``[security]
temporary_password_hours``, replaced at the first sign-in (:mod:`server.auth.accounts`). Each change is an audit
row ``user.*`` with what the user was and became (``before``, ``after``), never a password, hash or secret.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ..answers import Page, Time, page, timed
from ..auth.openapi import ErrorBody, Open, answers
from ..registry.models import FieldError
from . import Principal, get_accounts, require
from .accounts import _NAME, split_password
from .bounds import Offset
from .scope import Scope, not_found, resolver, scoped

router = APIRouter(prefix="/api/v1", tags=["users"])
RoleName = Literal["admin", "engineer", "viewer", "auditor"]
UserName = Annotated[str, Path(min_length=1, max_length=64, description="the user's name")]
Auditor = Annotated[Principal, Depends(require("auditor"))]
Admin = Annotated[Principal, Depends(require("admin"))]
scoped("/api/v1/users", "/api/v1/users/{user}", "/api/v1/users/{user}/disable", "/api/v1/users/{user}/enable",
       "/api/v1/users/{user}/password", "/api/v1/users/{user}/reset-2fa", "/api/v1/users/{user}/sessions")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class NewUser(_Body):
    name: str = Field(min_length=1, max_length=64, pattern=_NAME.pattern,
                      description="letters, digits and _ . @ - (the sign-in name)")
    role: RoleName
    scope: str = Field("province", min_length=1, max_length=1000,
                       description="province, or comma-separated city:NAME / county:NAME (the institutions' region "
                                   "and county), within the caller's own")


class UserChange(_Body):
    role: RoleName | None = None
    scope: str | None = Field(None, min_length=1, max_length=1000, description="as for a new user")


class OneTimeState(Open):
    expires: Time = Field(description="the one-time password is refused after this")


class UserOut(Open):
    name: str
    role: str
    scope: str
    two_factor: bool
    disabled: bool
    locked_until: Time | None = None
    created: Time | None = None
    last_login: Time | None = None
    one_time_password: OneTimeState | None = Field(None, description="set while the user has a one-time password "
                                                                     "still to replace")
    sessions: int = Field(description="sessions in force")


class SessionOut(Open):
    created: Time
    last_seen: Time
    expires: Time
    client: str


class UserDetail(UserOut):
    session_list: list[SessionOut]


class Made(Open):
    user: UserOut
    password: str = Field(description="the one-time password: shown this once, never stored as it is")
    expires: Time
    note: str


class Reset(Open):
    user: UserOut
    password: str
    expires: Time
    sessions_ended: int
    note: str


class Changed(Open):
    user: UserOut
    sessions_ended: int


class Ended(Open):
    sessions_ended: int


def _also(route: dict[str, Any], more: dict[int, str]) -> dict[str, Any]:
    """:func:`answers` route keywords with more documented error statuses."""
    return {**route, "responses": {**route["responses"],
                                   **{k: {"model": ErrorBody, "description": v} for k, v in more.items()}}}


_SELF = "Your own account (change your password at POST /api/v1/session/password)"
_WRITE = {403: "The role may not do this, or the scope asked for is outside the caller's (errors names scope)",
          409: _SELF}


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


# who may manage whom ------------------------------------------------------------------------------------------
async def outside(storage: Any, mine: Scope, theirs: Scope, regions: dict[str, set[str]] | None = None) -> str | None:
    """None when every place of ``theirs`` lies within ``mine``; else the first part that does not (``province``,
    ``city:X``, ``county:Y``). A county lies within a city when the institutions of that county are all in the
    city (and there is one: a county nobody has placed yet cannot be shown to lie anywhere). ``regions``: a cache of
    county -> its institutions' cities, for many checks at once."""
    if mine.province:
        return None
    if theirs.province:
        return "province"
    for city in sorted(theirs.cities - mine.cities):
        return f"city:{city}"
    for county in sorted(theirs.counties - mine.counties):
        if regions is None or county not in regions:
            got = {i["region"] for i in await storage.list_institutions(county)}
            if regions is not None:
                regions[county] = got
        else:
            got = regions[county]
        if not got or not got <= mine.cities:
            return f"county:{county}"
    return None


@resolver("user")
async def _user_in_scope(app: Any, value: str, principal: Principal) -> bool:
    user = await app.state.storage.get_user(value)
    return user is not None and await outside(app.state.storage, principal.scope, Scope.parse(user["scope"])) is None


async def _grantable(request: Request, p: Principal, scope: str) -> str:
    """``scope`` as stored, when ``p`` may grant it; 422 (not a scope) or 403 (outside ``p``'s), naming it."""
    try:
        wanted = Scope.parse(scope)
    except ValueError as err:
        raise FieldError("scope", str(err).partition(": ")[2] or str(err)) from None
    beyond = await outside(request.app.state.storage, p.scope, wanted)
    if beyond is not None:
        raise FieldError("scope", f"{beyond} is outside your own scope ({p.scope.text()}): you may give only places "
                                  "within it (a county within your cities once the registry places it there)", 403)
    return wanted.text()


def _not_self(p: Principal, name: str) -> None:
    if p.user and p.user == name:
        raise FieldError("user", "your own account: another administrator changes it (your password: POST "
                                 "/api/v1/session/password)", 409)


async def _target(request: Request, name: str) -> dict[str, Any]:
    user = await request.app.state.storage.get_user(name)
    if user is None:
        raise not_found("user", name)
    return user  # type: ignore[no-any-return]


def _out(user: dict[str, Any], sessions: int) -> dict[str, Any]:
    once = split_password(user["password"])[1]
    return {"name": user["name"], "role": user["role"], "scope": user["scope"], "two_factor": bool(user["totp_secret"]),
            "disabled": bool(user["disabled"]), "locked_until": user["locked_until"] or None,
            "created": user["created"], "last_login": user["last_login"],
            "one_time_password": {"expires": once} if once is not None else None, "sessions": sessions}


async def _one(request: Request, name: str) -> dict[str, Any]:
    user = await _target(request, name)
    now = get_accounts(request.app).now()
    return _out(user, len(await request.app.state.storage.list_sessions(now, name)))


def _tz(request: Request) -> str:
    return request.app.state.settings.timezone  # type: ignore[no-any-return]


def _once_s(request: Request) -> float:
    return float(request.app.state.settings.security.temporary_password_hours) * 3600.0


# reading ------------------------------------------------------------------------------------------------------
@router.get("/users", **answers(Page[UserOut]))
async def list_users(request: Request, p: Auditor,
                     role: Annotated[RoleName | None, Query()] = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 1000, offset: Offset = 0) -> dict[str, Any]:
    """The named users within the caller's scope (the province: every one), by name: role, scope, two-factor,
    disabled, lock, one-time password still to replace, sessions in force, last sign-in; never a password or
    secret."""
    st = request.app.state.storage
    now = get_accounts(request.app).now()
    counts: dict[str, int] = {}
    for s in await st.list_sessions(now):
        counts[s["user_name"]] = counts.get(s["user_name"], 0) + 1
    regions: dict[str, set[str]] = {}
    rows = [_out(u, counts.get(u["name"], 0)) for u in await st.list_users()
            if (role is None or u["role"] == role)
            and await outside(st, p.scope, Scope.parse(u["scope"]), regions) is None]
    return timed(page(rows[offset:offset + limit], len(rows), limit, offset), _tz(request))  # type: ignore[no-any-return]


@router.get("/users/{user}", **answers(UserDetail))
async def get_user(request: Request, user: UserName, _p: Auditor) -> dict[str, Any]:
    """One user, with the sessions in force (when made, last request, when it ends, from where)."""
    out = await _one(request, user)
    now = get_accounts(request.app).now()
    out["session_list"] = [{k: s[k] for k in ("created", "last_seen", "expires", "client")}
                           for s in await request.app.state.storage.list_sessions(now, user)]
    return timed(out, _tz(request))  # type: ignore[no-any-return]


# changing -----------------------------------------------------------------------------------------------------
@router.post("/users", **_also(answers(Made), {
    403: _WRITE[403], 409: "A user of that name exists already (errors names name)"}))
async def create_user(request: Request, body: NewUser, p: Admin) -> dict[str, Any]:
    """Add a user with a one-time password (in the answer, shown this once): they sign in with it and must
    replace it at once; it is refused after ``expires``. An administrator also enrols two-factor at the first
    sign-in. The scope must lie within the caller's own."""
    scope = await _grantable(request, p, body.scope)
    try:
        made = await get_accounts(request.app).add_user(body.name, body.role, scope, None, by=p.name,
                                                        client=_client(request), by_role=p.role,
                                                        once_s=_once_s(request))
    except ValueError as err:
        field, _, msg = str(err).partition(": ")
        raise FieldError(field, msg, 409 if "exists already" in msg else 422) from None
    return timed({"user": await _one(request, body.name), "password": made["password"],  # type: ignore[no-any-return]
                  "expires": made["expires"],
                  "note": "give the user this one-time password by a way other than e-mail; it is shown only now"},
                 _tz(request))


@router.patch("/users/{user}", **_also(answers(Changed), _WRITE))
async def change_user(request: Request, user: UserName, body: UserChange, p: Admin) -> dict[str, Any]:
    """Change the role and/or the scope (within the caller's own). The user's sessions end when either changes:
    they sign in again under the new one."""
    await _target(request, user)
    _not_self(p, user)
    scope = await _grantable(request, p, body.scope) if body.scope is not None else None
    _row, ended = await get_accounts(request.app).change(user, body.role, scope, by=p.name, client=_client(request),
                                                         by_role=p.role)
    return timed({"user": await _one(request, user), "sessions_ended": ended}, _tz(request))  # type: ignore[no-any-return]


async def _disable(request: Request, user: str, p: Principal, disabled: bool) -> dict[str, Any]:
    await _target(request, user)
    _not_self(p, user)
    ended = await get_accounts(request.app).set_disabled(user, disabled, by=p.name, client=_client(request),
                                                         by_role=p.role)
    return timed({"user": await _one(request, user), "sessions_ended": ended}, _tz(request))  # type: ignore[no-any-return]


@router.post("/users/{user}/disable", **_also(answers(Changed), _WRITE))
async def disable_user(request: Request, user: UserName, p: Admin) -> dict[str, Any]:
    """Disable: refused at the next request, every session ended."""
    return await _disable(request, user, p, True)


@router.post("/users/{user}/enable", **_also(answers(Changed), _WRITE))
async def enable_user(request: Request, user: UserName, p: Admin) -> dict[str, Any]:
    """Enable again (also lifts a lock-out after failed sign-ins)."""
    return await _disable(request, user, p, False)


@router.post("/users/{user}/password", **_also(answers(Reset), _WRITE))
async def reset_password(request: Request, user: UserName, p: Admin) -> dict[str, Any]:
    """A one-time password in place of a forgotten one (in the answer, shown this once): replaced at the next
    sign-in, refused after ``expires``; lifts a lock-out and ends the user's sessions. Two-factor stays."""
    await _target(request, user)
    _not_self(p, user)
    got = await get_accounts(request.app).reset_password(user, by=p.name, client=_client(request), by_role=p.role,
                                                         once_s=_once_s(request))
    return timed({"user": await _one(request, user), **got,  # type: ignore[no-any-return]
                  "note": "give the user this one-time password by a way other than e-mail; it is shown only now"},
                 _tz(request))


@router.post("/users/{user}/reset-2fa", **_also(answers(Changed), _WRITE))
async def reset_2fa(request: Request, user: UserName, p: Admin) -> dict[str, Any]:
    """Forget the user's authenticator and recovery codes (a lost phone): they enrol again at the next sign-in
    (administrators must). Ends their sessions."""
    await _target(request, user)
    _not_self(p, user)
    ended = await get_accounts(request.app).reset_2fa(user, by=p.name, client=_client(request), by_role=p.role)
    return timed({"user": await _one(request, user), "sessions_ended": ended}, _tz(request))  # type: ignore[no-any-return]


@router.delete("/users/{user}/sessions", **answers(Ended))
async def end_sessions(request: Request, user: UserName, p: Admin) -> dict[str, Any]:
    """End every session of the user (yours too: signs you out everywhere)."""
    await _target(request, user)
    ended = await get_accounts(request.app).end_sessions(user, by=p.name, client=_client(request), by_role=p.role)
    return {"sessions_ended": ended}
