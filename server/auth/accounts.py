"""Named users and the dashboard's sign-in (issue 18; docs/decisions/031-users-scopes-sign-in.md).

* Passwords: Argon2id (argon2-cffi's defaults), at least :data:`MIN_PASSWORD` characters.
* Two-factor: TOTP (RFC 6238, pyotp: 6 digits, 30 s, one step of drift either way), a code accepted once (its
  time step is remembered); enrolment by QR code (segno, SVG) and ten one-time recovery codes kept hashed.
  Compulsory for admins: an admin without it signs in to an ``enrol`` session that can only enrol.
* Sessions: a random cookie (only its SHA-256 is stored), ending :data:`IDLE_S` after the last request or
  :data:`MAX_S` after sign-in, whichever is first; ended at sign-out, when the user is disabled or their
  two-factor is reset. Writes under a cookie need the session's CSRF token in ``X-CSRF-Token``.
* Lock-out: ``[security] signin_failures`` failed sign-ins in a row (default :data:`LOCK_FAILURES`) lock the user
  for ``signin_lock_minutes`` (default :data:`LOCK_S`; 429, saying until when); a lock raises a ``security``
  alert.
* One-time passwords: an administrator creating a user or resetting a password over HTTP gets a random password
  shown once; it is good until it expires (``[security] temporary_password_hours``) and signs in to a
  ``password`` session that can only replace it (``POST /api/v1/session/password``). Kept in the password column
  as ``once:<until>:<argon2 hash>`` (:func:`split_password`): the column holds what the check needs.
* Every sign-in, failed or not, is an audit row ``session.signin`` (who, when, from where, the result); sign-out
  ``session.signout``; enrolment, resets and every change to a user (``user.*``, with what it was and what it
  became, never a password, hash or secret) too.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..tasks import beside
from .scope import COOKIE, ROLES, Principal, Scope  # noqa: F401  (COOKIE re-exported)

log = logging.getLogger(__name__)

MIN_PASSWORD = 10
IDLE_S = 30 * 60.0
MAX_S = 12 * 3600.0
TOUCH_S = 60.0  # a session's last request is written at most this often
LOCK_FAILURES = 5  # the defaults of [security] signin_failures and signin_lock_minutes (server/settings.py)
LOCK_S = 15 * 60.0
RECOVERY_CODES = 10
ONCE = "once:"  # a one-time password's stored form: once:<until, epoch s>:<argon2 hash>
ONCE_S = 72 * 3600.0  # the default of [security] temporary_password_hours
_ONCE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read out over the phone
ISSUER = "posfleet"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_hasher = PasswordHasher()
_DUMMY: list[str] = []  # a hash to verify against for an unknown user (made at first need: ~0.1 s)


class SignInError(Exception):
    """Refused: ``status`` (401, 403, 429, 404, 409, 422), the field and a sentence for the person."""

    def __init__(self, status: int, field: str, message: str, result: str = "") -> None:
        super().__init__(message)
        self.status, self.field, self.message, self.result = status, field, message, result or message


@dataclass
class SignedIn:
    cookie: str
    csrf: str
    user: dict[str, Any]
    stage: str  # "full" or "enrol" (an admin who must enrol two-factor first)
    expires: float


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"password: at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def new_one_time_password() -> str:
    """16 letters and digits in four groups (``k7dm-q2xe-...``): ~79 bits, easy to read out over the phone."""
    return "-".join("".join(secrets.choice(_ONCE_ALPHABET) for _ in range(4)) for _ in range(4))


def split_password(stored: str) -> tuple[str, float | None]:
    """(argon2 hash, until when it is good if it is a one-time password, else None) of a stored password."""
    if stored.startswith(ONCE):
        _, until, hashed = stored.split(":", 2)
        return hashed, float(until)
    return stored, None


def view(user: dict[str, Any], now: float) -> dict[str, Any]:
    """What an audit row says a user was or became: never a password, hash or secret."""
    return {"role": user["role"], "scope": user["scope"], "disabled": bool(user["disabled"]),
            "two_factor": bool(user["totp_secret"]), "locked": user["locked_until"] > now,
            "one_time_password": split_password(user["password"])[1] is not None}


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise ValueError("name: 1-64 letters, digits or _ . @ -")
    return name


def totp_ok(secret: str, code: str, now: float, last_step: int) -> int:
    """The time step ``code`` matches (within one step either way, and later than ``last_step``: a code is
    accepted once), or 0."""
    code = (code or "").strip().replace(" ", "")
    if not secret or not code.isdigit() or len(code) != 6:
        return 0
    totp = pyotp.TOTP(secret)
    step = int(now // totp.interval)
    for s in (step, step - 1, step + 1):
        if s > last_step and hmac.compare_digest(totp.at(s * totp.interval), code):
            return s
    return 0


def qr_svg(uri: str) -> str:
    """A standalone SVG document (with its namespace: the page shows it as an image)."""
    import io

    import segno

    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", scale=4, xmldecl=False)
    return out.getvalue().decode()


class Accounts:
    """Users, sign-in and sessions on ``storage``; ``audit``: :class:`server.audit.store.Audit` (or None);
    ``now``: wall time (tests give a fixed one)."""

    def __init__(self, storage: Any, audit: Any = None, alert: Callable[..., Any] | None = None,
                 now: Callable[[], float] = time.time, lock_failures: int = LOCK_FAILURES,
                 lock_s: float = LOCK_S) -> None:
        self.storage = storage
        self.audit = audit
        self.alert = alert  # async (key, message, data) -> None: a security alert
        self.now = now
        self.lock_failures = lock_failures  # [security] signin_failures
        self.lock_s = lock_s  # [security] signin_lock_minutes, in seconds

    async def _audit(self, actor: str, action: str, target: str = "", client: str = "", status: int | None = None,
                     role: str = "", **detail: Any) -> None:
        if self.audit is not None:
            await self.audit.record(actor, action, target, role=role, client=client, status=status,
                                    detail=detail or None)

    # users -----------------------------------------------------------------------------------------------------
    async def add_user(self, name: str, role: str, scope: str, password: str | None, by: str = "cli",
                       client: str = "", by_role: str = "", once_s: float = ONCE_S) -> dict[str, Any]:
        """A new user with ``password``, or (None) with a one-time password good for ``once_s``: then the answer
        holds it (``password``, shown once) and when it expires (``expires``)."""
        check_name(name)
        if role not in ROLES:
            raise ValueError(f"role: one of {', '.join(ROLES)}")
        text = Scope.parse(scope).text()
        now = self.now()
        once = new_one_time_password() if password is None else None
        until = float(round(now + once_s))
        stored = hash_password(password) if once is None else f"{ONCE}{until:.0f}:{_hasher.hash(once)}"
        if not await self.storage.add_user(name, role, text, stored, now):
            raise ValueError(f"name: a user {name!r} exists already")
        after = {"role": role, "scope": text, "disabled": False, "two_factor": False, "locked": False,
                 "one_time_password": once is not None}
        await self._audit(by, "user.add", name, client=client, role=by_role, after=after)
        made: dict[str, Any] = {"name": name, "role": role, "scope": text}
        if once is not None:
            made.update(password=once, expires=until)
        return made

    async def _user(self, name: str) -> dict[str, Any]:
        user = await self.storage.get_user(name)
        if user is None:
            raise KeyError(name)
        return user  # type: ignore[no-any-return]

    async def _changed(self, action: str, name: str, before: dict[str, Any], by: str, client: str, by_role: str,
                       **more: Any) -> dict[str, Any]:
        """The audit row of a change to ``name``: what it was, what it became; the user as it is now."""
        user = await self._user(name)
        await self._audit(by, action, name, client=client, role=by_role, before=before,
                          after=view(user, self.now()), **more)
        return user

    async def set_disabled(self, name: str, disabled: bool, by: str = "cli", client: str = "",
                           by_role: str = "") -> int:
        """Disable (ending every session of the user; how many) or enable again (lifting a lock-out too)."""
        before = view(await self._user(name), self.now())
        if not await self.storage.update_user(name, disabled=disabled, failures=0, locked_until=0):
            raise KeyError(name)
        ended = await self.storage.end_sessions(self.now(), user=name) if disabled else 0
        await self._changed("user.disable" if disabled else "user.enable", name, before, by, client, by_role,
                            sessions_ended=ended)
        return ended

    async def change(self, name: str, role: str | None = None, scope: str | None = None, by: str = "cli",
                     client: str = "", by_role: str = "") -> tuple[dict[str, Any], int]:
        """A new role and/or scope (``scope`` already checked by the caller against its own); the user's sessions
        end when either changes (they sign in again under it: an administrator without two-factor must then enrol).
        (the user, sessions ended)."""
        user = await self._user(name)
        before = view(user, self.now())
        fields: dict[str, Any] = {}
        if role is not None and role != user["role"]:
            if role not in ROLES:
                raise ValueError(f"role: one of {', '.join(ROLES)}")
            fields["role"] = role
        if scope is not None:
            text = Scope.parse(scope).text()
            if text != user["scope"]:
                fields["scope"] = text
        if not fields:
            return user, 0
        await self.storage.update_user(name, **fields)
        ended = await self.storage.end_sessions(self.now(), user=name)
        return await self._changed("user.change", name, before, by, client, by_role, sessions_ended=ended), ended

    async def reset_2fa(self, name: str, by: str = "cli", client: str = "", by_role: str = "") -> int:
        """Forget the user's TOTP secret and recovery codes (a lost phone): they enrol again at next sign-in
        (admins must). Ends their sessions; how many."""
        before = view(await self._user(name), self.now())
        if not await self.storage.update_user(name, totp_secret="", totp_pending="", totp_step=0, recovery=[]):
            raise KeyError(name)
        ended = await self.storage.end_sessions(self.now(), user=name)
        await self._changed("user.reset_2fa", name, before, by, client, by_role, sessions_ended=ended)
        return ended

    async def set_password(self, name: str, password: str, by: str = "cli") -> None:
        before = view(await self._user(name), self.now())
        if not await self.storage.update_user(name, password=hash_password(password), failures=0, locked_until=0):
            raise KeyError(name)
        ended = await self.storage.end_sessions(self.now(), user=name)
        await self._changed("user.password", name, before, by, "", "", sessions_ended=ended)

    async def reset_password(self, name: str, by: str, client: str = "", by_role: str = "",
                             once_s: float = ONCE_S) -> dict[str, Any]:
        """A one-time password in place of the user's (a forgotten one): good for ``once_s``, it must be replaced
        at the next sign-in; lifts a lock-out, ends the user's sessions. ``{password, expires, sessions_ended}``
        (the password shown this once)."""
        before = view(await self._user(name), self.now())
        once = new_one_time_password()
        until = float(round(self.now() + once_s))
        if not await self.storage.update_user(name, password=f"{ONCE}{until:.0f}:{_hasher.hash(once)}", failures=0,
                                              locked_until=0):
            raise KeyError(name)
        ended = await self.storage.end_sessions(self.now(), user=name)
        await self._changed("user.reset_password", name, before, by, client, by_role, sessions_ended=ended)
        return {"password": once, "expires": until, "sessions_ended": ended}

    async def end_sessions(self, name: str, by: str, client: str = "", by_role: str = "") -> int:
        """End every session of the user (they sign in again); how many were in force."""
        await self._user(name)
        ended = await self.storage.end_sessions(self.now(), user=name)
        await self._audit(by, "user.end_sessions", name, client=client, role=by_role, sessions_ended=ended)
        return ended

    async def change_own_password(self, principal: Principal, current: str, new: str, client: str = "") -> int:
        """The signed-in user replaces their password (a one-time one must be): the current one checked (a wrong
        one counts toward the lock-out), the new one at least :data:`MIN_PASSWORD` characters and different;
        every session of theirs ends (sign in again). How many ended."""
        now = self.now()
        user = await self._user(principal.user)
        hashed, _once = split_password(user["password"])
        before = view(user, now)
        if not _verify(hashed, current):
            await self._failed(user, now, client, "wrong password (password change)")
        if new == current:
            raise SignInError(422, "new_password", "the new password must differ from the current one")
        try:
            stored = hash_password(new)
        except ValueError as err:
            raise SignInError(422, "new_password", str(err).partition(": ")[2]) from None
        await self.storage.update_user(principal.user, password=stored, failures=0)
        ended = await self.storage.end_sessions(now, user=principal.user)
        await self._changed("user.password_change", principal.user, before, principal.user, client, principal.role,
                            sessions_ended=ended)
        return ended

    # sign-in ---------------------------------------------------------------------------------------------------
    async def sign_in(self, name: str, password: str, code: str = "", client: str = "") -> SignedIn:
        now = self.now()
        user = await self.storage.get_user(name) if _NAME.match(name or "") else None
        try:
            if user is None:
                if _NAME.match(name or ""):  # a name that could exist costs the same time as a known user's
                    if not _DUMMY:
                        _DUMMY.append(_hasher.hash("posfleet: an unknown user costs as much as a known one"))
                    _verify(_DUMMY[0], password)
                raise SignInError(401, "password", "wrong user name or password", "unknown user")
            if user["locked_until"] > now:
                raise SignInError(429, "user", _locked(user["locked_until"]), "locked")
            hashed, once_until = split_password(user["password"])
            if not _verify(hashed, password):
                await self._failed(user, now, client, "wrong password")
            if user["disabled"]:
                raise SignInError(403, "user", "this account is disabled; ask an administrator", "disabled")
            if once_until is not None and once_until <= now:
                raise SignInError(401, "password", "this one-time password has expired: ask an administrator for a "
                                  "new one", "one-time password expired")
            stage = "full"
            if user["totp_secret"]:
                if not code:
                    raise SignInError(401, "code", "enter the 6-digit code from the authenticator app (or a "
                                      "recovery code)", "code needed")
                step = totp_ok(user["totp_secret"], code, now, int(user["totp_step"]))
                if step:
                    await self.storage.update_user(name, totp_step=step)
                elif sha(_norm(code)) in user["recovery"]:
                    left = [h for h in user["recovery"] if h != sha(_norm(code))]
                    await self.storage.update_user(name, recovery=left)
                    await self._audit(name, "user.recovery_code_used", name, client=client, left=len(left))
                else:
                    await self._failed(user, now, client, "wrong code", field="code")
            elif user["role"] == "admin":
                stage = "enrol"
            if once_until is not None:  # replaced first; an admin without two-factor enrols at the next sign-in
                stage = "password"
        except SignInError as err:
            await self._audit(name[:64] or "?", "session.signin", name[:64], client=client, status=err.status,
                              result=err.result)
            raise
        await self.storage.update_user(name, failures=0, last_login=now)
        cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        expires = now + (IDLE_S if stage == "full" else min(IDLE_S, 600.0))
        # an enrolment-only or password-only session is marked by ":enrol" or ":password" after its CSRF token (no
        # column of its own: schema 4 went out with sessions as they are); session_principal strips it and says so
        await self.storage.add_session(sha(cookie), name, csrf + ("" if stage == "full" else f":{stage}"), now,
                                       expires, client)
        await self._audit(name, "session.signin", name, client=client, status=200, role=user["role"], result="ok",
                          stage=stage)
        return SignedIn(cookie, csrf, user, stage, expires)

    async def _failed(self, user: dict[str, Any], now: float, client: str, result: str, field: str = "password"
                      ) -> None:
        failures, locked = await self.storage.sign_in_failed(user["name"], now, self.lock_failures, self.lock_s)
        if locked:
            if self.alert is not None:
                await self.alert(f"security:signin:{user['name']}",
                                 f"{user['name']}: {self.lock_failures} failed sign-ins in a row (last from {client}); "
                                 f"locked for {self.lock_s / 60:.0f} minutes",
                                 {"what": "signin_failures", "user": user["name"], "client": client})
            raise SignInError(429, "user", _locked(locked), result + ", now locked")
        left = self.lock_failures - failures
        msg = "wrong user name or password" if field == "password" else "wrong code"
        raise SignInError(401, field, f"{msg} ({left} more tries before the account is locked for "
                          f"{self.lock_s / 60:.0f} minutes)", result)

    async def sign_out(self, principal: Principal, client: str = "") -> None:
        await self.storage.end_sessions(self.now(), sid=principal.session)
        await self._audit(principal.user, "session.signout", principal.user, client=client, role=principal.role)

    # two-factor enrolment ----------------------------------------------------------------------------------------
    async def start_totp(self, name: str) -> dict[str, str]:
        """A new secret offered (kept as pending until a code from it is confirmed): its otpauth URI and QR."""
        secret = pyotp.random_base32()
        await self.storage.update_user(name, totp_pending=secret)
        uri = pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=ISSUER)
        return {"secret": secret, "otpauth_uri": uri, "qr_svg": qr_svg(uri)}

    async def confirm_totp(self, principal: Principal, code: str, client: str = "") -> list[str]:
        """The pending secret becomes the user's once ``code`` matches it; new recovery codes (shown once)."""
        user = await self.storage.get_user(principal.user)
        if user is None or not user["totp_pending"]:
            raise SignInError(409, "code", "start the enrolment first (POST /api/v1/session/totp)")
        step = totp_ok(user["totp_pending"], code, self.now(), 0)
        if not step:
            raise SignInError(422, "code", "the code does not match the new secret: check the phone's time and "
                              "scan the QR code again")
        codes = [f"{secrets.randbelow(10**10):010d}" for _ in range(RECOVERY_CODES)]
        await self.storage.update_user(principal.user, totp_secret=user["totp_pending"], totp_pending="",
                                       totp_step=step, recovery=[sha(c) for c in codes])
        if principal.session:  # an enrol-only session becomes a full one
            row = await self.storage.find_session(principal.session, self.now())
            if row is not None and row["csrf"].endswith(":enrol"):
                await self.storage.end_sessions(self.now(), sid=principal.session)
        await self._audit(principal.user, "user.enrol_2fa", principal.user, client=client, role=principal.role)
        return codes

    # requests ----------------------------------------------------------------------------------------------------
    async def session_principal(self, cookie: str) -> tuple[Principal, str, str] | None:
        """(principal, csrf, stage) of the session in force with this cookie, or None. ``stage``: "" for a full
        session, "enrol" (an admin who must enrol two-factor) or "password" (a one-time password to replace): these
        reach ``/api/v1/session*`` only. Slides a full session's expiry."""
        now = self.now()
        row = await self.storage.find_session(sha(cookie), now)
        if row is None or row["disabled"]:
            return None
        csrf, stage = row["csrf"], ""
        for limited in ("enrol", "password"):
            if csrf.endswith(":" + limited):
                csrf, stage = csrf[: -len(limited) - 1], limited
        if not stage and now - row["last_seen"] >= TOUCH_S:
            # sliding the expiry is best effort, written beside the request (one at a time a session). Only a
            # request arriving before the write lands, after the old expiry, would find the session ended.
            sid, expires = row["id"], min(now + IDLE_S, row["created"] + MAX_S)
            beside(("session", sid), lambda: self.storage.touch_session(sid, now, expires),
                   f"could not extend the session of {row['user_name']}")
        p = Principal(row["user_name"], row["role"], Scope.parse(row["scope"]), "session", row["user_name"],
                      row["id"])
        return p, csrf, stage


def _norm(code: str) -> str:
    return re.sub(r"[\s-]", "", code or "")


def _verify(hashed: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(hashed, password or ""))
    except (VerificationError, InvalidHashError):
        return False


def _locked(until: float) -> str:
    left = max(1, int((until - time.time()) // 60) + 1) if until > time.time() else 1
    return (f"too many failed sign-ins: this account is locked until "
            f"{time.strftime('%H:%M', time.localtime(until))} (about {left} minutes); an administrator can "
            "unlock it (posfleet server user enable)")
