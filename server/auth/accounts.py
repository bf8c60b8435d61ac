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
* Every sign-in, failed or not, is an audit row ``session.signin`` (who, when, from where, the result); sign-out
  ``session.signout``; enrolment and resets too.
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

from .scope import COOKIE, ROLES, Principal, Scope  # noqa: F401  (COOKIE re-exported)

log = logging.getLogger(__name__)

MIN_PASSWORD = 10
IDLE_S = 30 * 60.0
MAX_S = 12 * 3600.0
TOUCH_S = 60.0  # a session's last request is written at most this often
LOCK_FAILURES = 5  # the defaults of [security] signin_failures and signin_lock_minutes (server/settings.py)
LOCK_S = 15 * 60.0
RECOVERY_CODES = 10
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
    async def add_user(self, name: str, role: str, scope: str, password: str, by: str = "cli") -> dict[str, Any]:
        check_name(name)
        if role not in ROLES:
            raise ValueError(f"role: one of {', '.join(ROLES)}")
        text = Scope.parse(scope).text()
        if not await self.storage.add_user(name, role, text, hash_password(password), self.now()):
            raise ValueError(f"name: a user {name!r} exists already")
        await self._audit(by, "user.add", name, role=role, scope=text)
        return {"name": name, "role": role, "scope": text}

    async def set_disabled(self, name: str, disabled: bool, by: str = "cli") -> int:
        """Disable (ending every session of the user; how many) or enable again."""
        if not await self.storage.update_user(name, disabled=disabled, failures=0, locked_until=0):
            raise KeyError(name)
        ended = await self.storage.end_sessions(self.now(), user=name) if disabled else 0
        await self._audit(by, "user.disable" if disabled else "user.enable", name, sessions_ended=ended)
        return ended

    async def reset_2fa(self, name: str, by: str = "cli") -> int:
        """Forget the user's TOTP secret and recovery codes (a lost phone): they enrol again at next sign-in
        (admins must). Ends their sessions; how many."""
        if not await self.storage.update_user(name, totp_secret="", totp_pending="", totp_step=0, recovery=[]):
            raise KeyError(name)
        ended = await self.storage.end_sessions(self.now(), user=name)
        await self._audit(by, "user.reset_2fa", name, sessions_ended=ended)
        return ended

    async def set_password(self, name: str, password: str, by: str = "cli") -> None:
        if not await self.storage.update_user(name, password=hash_password(password), failures=0, locked_until=0):
            raise KeyError(name)
        await self.storage.end_sessions(self.now(), user=name)
        await self._audit(by, "user.password", name)

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
            if not _verify(user["password"], password):
                await self._failed(user, now, client, "wrong password")
            if user["disabled"]:
                raise SignInError(403, "user", "this account is disabled; ask an administrator", "disabled")
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
        except SignInError as err:
            await self._audit(name[:64] or "?", "session.signin", name[:64], client=client, status=err.status,
                              result=err.result)
            raise
        await self.storage.update_user(name, failures=0, last_login=now)
        cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        expires = now + (min(IDLE_S, 600.0) if stage == "enrol" else IDLE_S)
        # an enrolment-only session is marked by ":enrol" after its CSRF token (no column of its own: schema 4 went
        # out with sessions as they are); session_principal strips it and says so
        await self.storage.add_session(sha(cookie), name, csrf + ("" if stage == "full" else ":enrol"), now,
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
    async def session_principal(self, cookie: str) -> tuple[Principal, str, bool] | None:
        """(principal, csrf, enrol-only) of the session in force with this cookie, or None. Slides its expiry."""
        now = self.now()
        row = await self.storage.find_session(sha(cookie), now)
        if row is None or row["disabled"]:
            return None
        csrf, enrol = row["csrf"], False
        if csrf.endswith(":enrol"):
            csrf, enrol = csrf[: -len(":enrol")], True
        elif now - row["last_seen"] >= TOUCH_S:
            try:  # sliding the expiry is best effort: a busy database must not refuse the request
                await self.storage.touch_session(row["id"], now, min(now + IDLE_S, row["created"] + MAX_S))
            except Exception as err:
                log.warning("could not extend the session of %s: %s", row["user_name"], err)
        p = Principal(row["user_name"], row["role"], Scope.parse(row["scope"]), "session", row["user_name"],
                      row["id"])
        return p, csrf, enrol


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
