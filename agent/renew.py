"""Certificate renewal over the air, the terminal's part (issue 17; docs/decisions/026-certificate-renewal.md).

Nobody at a village clinic can renew a certificate, and one that expires cuts the unit off until a visit. When the
certificate in use (``link.cert_file``) has less than ``renewal.days_before`` days left, the agent:

1. ``key``       makes a new key and a request for it, in a child process (``cryptography`` never enters the
                 agent: decision 019), in ``<certificate folder>/renew/``; the key never leaves the terminal;
2. ``sent``      stores a ``cert_request`` event with the request: the outbox keeps it until the server has
                 committed it; asked again after ``renewal.resend_h`` if no certificate came;
3. ``received``  takes the certificate the server sends on ``pf/<sn>/x`` once a child has checked it (issued by the
                 fleet CA in ``link.ca_file``, for this SN, for the new key, lasting longer than the old one) and
                 keeps it beside the new key;
4. ``switching`` loads the new pair into the link's TLS context and reconnects. The old files stay where they are:
                 a connection with the new pair that does not come up within ``renewal.switch_timeout_s`` puts the
                 old pair back and tries again later;
5. ``committing`` the first connection with the new pair succeeded: the new key and certificate replace the old
                 ones (two renames, redone at start if cut between them: the new pair stays in ``renew/`` until
                 both are in place);
6. ``confirm``   stores a ``cert_switched`` event (serial) so the server records the switch and the CA revokes the
                 old certificate; ends when the server acknowledges on ``pf/<sn>/x``.

Each step is written to ``renew/state.json`` (atomically) before the next begins: an agent killed at any point
starts again from the step it was in, with a working key and certificate pair in place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHILD_TIMEOUT_S = 60.0


def certificate_dates(path: Path) -> tuple[float, str]:
    """(not-after epoch, serial in lower-case hex) of a PEM certificate, read without ``cryptography`` (the ssl
    module's own decoder)."""
    d = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
    return ssl.cert_time_to_seconds(d["notAfter"]), format(int(d["serialNumber"], 16), "x")


# the child's work (python -P -m agent.renew): key and request, or the check of a certificate --------------------
def _child_csr(job: dict[str, Any]) -> dict[str, Any]:
    from .enroll import make_key_and_csr

    _key, csr = make_key_and_csr(job["sn"], Path(job["dir"]), job.get("passphrase", ""))
    return {"csr": csr.read_text()}


def _child_check(job: dict[str, Any]) -> dict[str, Any]:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(job["cert"].encode())
    cas = x509.load_pem_x509_certificates(Path(job["ca"]).read_bytes())
    for ca in cas:
        if ca.subject != cert.issuer:
            continue
        pub = ca.public_key()
        try:
            assert isinstance(pub, ec.EllipticCurvePublicKey) and cert.signature_hash_algorithm is not None
            pub.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
            break
        except (InvalidSignature, AssertionError):
            continue
    else:
        raise ValueError("not issued by the fleet CA in link.ca_file")
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1 or cns[0].value != job["sn"]:
        raise ValueError(f"issued to {cns[0].value if cns else '?'!r}, not to {job['sn']!r}")
    pw = job.get("passphrase") or None
    key = serialization.load_pem_private_key(Path(job["key"]).read_bytes(), pw.encode() if pw else None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(serialization.Encoding.DER, spki) != \
            key.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise ValueError("for another key than the one this terminal made")
    not_after = cert.not_valid_after_utc.timestamp()
    if not_after <= float(job["not_after_before"]):
        raise ValueError("does not last longer than the certificate in use")
    return {"serial": format(cert.serial_number, "x"), "not_after": not_after}


def _main() -> None:
    job = json.loads(sys.stdin.read())
    try:
        out = _child_csr(job) if job["do"] == "csr" else _child_check(job)
    except Exception as err:  # noqa: BLE001 - the parent is told why
        out = {"error": f"{type(err).__name__}: {err}"}
    sys.stdout.write(json.dumps(out))


def run_child(job: dict[str, Any]) -> dict[str, Any]:
    """One job in a fresh interpreter; the passphrase travels on stdin, never on the command line."""
    try:
        proc = subprocess.run([sys.executable, "-P", "-m", "agent.renew"], input=json.dumps(job).encode(),
                              capture_output=True, timeout=CHILD_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"error": f"the renewal helper could not run: {err}"}
    try:
        out: dict[str, Any] = json.loads(proc.stdout or b"{}")
    except ValueError:
        out = {}
    if proc.returncode != 0 or not out:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {"error": f"the renewal helper failed: {tail[0][:300]}"}
    return out


# the agent's side --------------------------------------------------------------------------------------------
class Renewer:
    """The renewal's steps, driven from the agent's thread (:meth:`tick`, :meth:`on_certificate`,
    :meth:`on_connect`). ``store_event(kind, data)`` puts an event in the outbox; ``context`` is the link's TLS
    context (the new pair is loaded into it to switch); ``reconnect()`` drops the connection so the next one uses
    it; ``connects()`` counts the link's connections so far."""

    def __init__(self, sn: str, ca_file: Path, cert_file: Path, key_file: Path, *, passphrase: str = "",
                 days_before: float = 60.0, resend_s: float = 24 * 3600.0, switch_timeout_s: float = 900.0,
                 now: Callable[[], float] = time.time, store_event: Callable[[str, dict[str, Any]], None],
                 context: Any = None, reconnect: Callable[[], None] = lambda: None,
                 connects: Callable[[], int] = lambda: 0, child: Callable[[dict[str, Any]], dict[str, Any]] = run_child,
                 clock_checked: Callable[[], bool] = lambda: True) -> None:
        self.sn = sn
        self.ca_file, self.cert_file, self.key_file = ca_file, cert_file, key_file
        self.passphrase = passphrase
        self.days_before, self.resend_s, self.switch_timeout_s = days_before, resend_s, switch_timeout_s
        self.now = now
        self.store_event = store_event
        self.context = context
        self.reconnect = reconnect
        self.connects = connects
        self.child = child
        # a terminal whose clock is wrong (a flat RTC battery, no NTP yet) must not think its certificate is ending
        self.clock_checked = clock_checked
        self.dir = cert_file.parent / "renew"
        self.last_error = ""
        self._checked_at = float("-inf")
        self._not_after: float | None = None  # of the certificate in use, once read

    # state ------------------------------------------------------------------------------------------------
    @property
    def new_key(self) -> Path:
        return self.dir / "terminal.key"

    @property
    def new_cert(self) -> Path:
        return self.dir / "terminal.pem"

    def state(self) -> dict[str, Any]:
        try:
            return json.loads((self.dir / "state.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    def _set(self, **state: Any) -> None:
        self.dir.mkdir(mode=0o700, exist_ok=True)
        tmp = self.dir / "state.json.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(state))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.dir / "state.json")
        log.info("certificate renewal: %s", state.get("step"))

    def _clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # at start, before the TLS context is made ------------------------------------------------------------
    def recover(self) -> None:
        """Finish a commit that was cut short (the key and certificate in place are then a pair again)."""
        st = self.state()
        if st.get("step") == "committing":
            self._commit_files(st)

    # the steps ------------------------------------------------------------------------------------------------
    def tick(self, connected: bool) -> str:
        """One look (cheap: the certificate's end is read once, then compared with the time).
        Returns the step the renewal is in (``""``: none)."""
        st = self.state()
        step = st.get("step", "")
        now = self.now()
        if not step:
            if self._not_after is None:  # read once (and after a renewal): a tick is then a comparison
                if now - self._checked_at < 60:
                    return ""
                self._checked_at = now
                try:
                    self._not_after = certificate_dates(self.cert_file)[0]
                except (OSError, ValueError, KeyError) as err:
                    self.last_error = f"cannot read {self.cert_file}: {err}"
                    return ""
            not_after = self._not_after
            if not_after - now > self.days_before * 86400 or not self.clock_checked():
                return ""
            self._clear()  # whatever an earlier try left
            self.dir.mkdir(mode=0o700, exist_ok=True)
            out = self.child({"do": "csr", "sn": self.sn, "dir": str(self.dir), "passphrase": self.passphrase})
            if "error" in out:
                self.last_error = out["error"]
                log.error("certificate renewal: cannot make a key and request: %s", out["error"])
                self._clear()
                return ""
            self._set(step="key", not_after=not_after, made=now)
            st, step = self.state(), "key"
        if step == "key" or (step == "sent" and now - float(st.get("sent_at", 0)) >= self.resend_s):
            csr = (self.dir / "terminal.csr").read_text()
            self.store_event("cert_request", {"csr": csr})
            self._set(**{**st, "step": "sent", "sent_at": now})
            return "sent"
        if step == "received" and connected and now >= float(st.get("retry_at", 0)):
            self._switch(st)
            return "switching"
        if step == "switching" and self.connects() <= int(st.get("connects", 0)) \
                and now - float(st.get("switch_at", now)) > self.switch_timeout_s:
            self._load(self.cert_file, self.key_file)
            self.last_error = "no connection with the renewed certificate: the old one is back"
            log.error("certificate renewal: %s (trying again in %.0f s)", self.last_error, self.resend_s)
            self._set(**{**st, "step": "received", "retry_at": now + self.resend_s})
            self.reconnect()
            return "received"
        if step == "confirm" and not st.get("stored"):
            self.store_event("cert_switched", {"serial": st["serial"]})
            self._set(**{**st, "stored": True})
        return str(self.state().get("step", ""))

    def snapshot(self) -> dict[str, Any]:
        """For the engineers' console: the certificate in use, its end and the renewal's step."""
        try:
            not_after, serial = certificate_dates(self.cert_file)
        except (OSError, ValueError, KeyError) as err:
            return {"error": f"cannot read {self.cert_file}: {err}"}
        st = self.state()
        return {"serial": serial, "not_after_ts": int(not_after), "days_left": round((not_after - self.now()) / 86400, 1),
                "renewal": st.get("step", ""), "renew_from_days": self.days_before, "last_error": self.last_error}

    def on_certificate(self, payload: bytes) -> str:
        """The server's message on ``pf/<sn>/x``: a certificate for our request, or the acknowledgement of the
        switch. Returns what it did."""
        from wire import boundary, codec

        try:
            msg = boundary.decode_certificate(payload)
        except codec.DecodeError as err:
            log.warning("certificate renewal: ignored an unreadable message: %s", err)
            return "ignored"
        st = self.state()
        step = st.get("step", "")
        if msg.done:
            if step == "confirm" and msg.done == st.get("serial"):
                self._clear()
                log.info("certificate renewal done: the server recorded the switch to %s", msg.done)
                return "done"
            return "ignored"
        if step not in ("key", "sent") or not msg.cert:
            return "ignored"  # not asked for, or already taken
        out = self.child({"do": "check", "sn": self.sn, "cert": msg.cert, "ca": str(self.ca_file),
                          "key": str(self.new_key), "passphrase": self.passphrase,
                          "not_after_before": st.get("not_after", 0)})
        if "error" in out:
            self.last_error = f"refused the certificate sent: {out['error']}"
            log.error("certificate renewal: %s", self.last_error)
            return "refused"
        tmp = self.dir / "terminal.pem.tmp"
        tmp.write_text(msg.cert)
        tmp.replace(self.new_cert)
        self._set(**{**st, "step": "received", "serial": out["serial"]})
        return "received"

    def on_connect(self) -> None:
        """A connection came up: the first one with the new pair commits it."""
        st = self.state()
        if st.get("step") == "switching" and self.connects() > int(st.get("connects", 0)):
            self._set(**{**st, "step": "committing"})
            self._commit_files(self.state())

    def _switch(self, st: dict[str, Any]) -> None:
        self._set(**{**st, "step": "switching", "switch_at": self.now(), "connects": self.connects()})
        self._load(self.new_cert, self.new_key)
        self.reconnect()

    def _load(self, cert: Path, key: Path) -> None:
        if self.context is None:
            return
        self.context.load_cert_chain(str(cert), str(key), password=lambda: self.passphrase)
        if hasattr(self.context, "saved_session"):
            self.context.saved_session = None  # a resumed session would not present the new certificate

    def _commit_files(self, st: dict[str, Any]) -> None:
        # each rename is done if its source is still there: a commit cut short is finished by doing it again
        if self.new_key.exists():
            os.replace(self.new_key, self.key_file)
        if self.new_cert.exists():
            os.replace(self.new_cert, self.cert_file)
        self._not_after = None
        self._set(step="confirm", serial=st["serial"], stored=False)
        self.store_event("cert_switched", {"serial": st["serial"]})
        self._set(step="confirm", serial=st["serial"], stored=True)
        log.info("certificate renewal: now using certificate %s", st["serial"])


if __name__ == "__main__":
    _main()
