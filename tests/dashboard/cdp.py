"""A tiny Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (no websocket library needed).

Chromium reads commands from fd 3 and writes replies and events to fd 4, each message JSON ending in NUL.
Every call has a deadline, so a test never hangs on a browser that stopped answering.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


class CdpError(RuntimeError):
    pass


class Browser:
    def __init__(self, width: int = 1366, height: int = 900) -> None:
        exe = chromium_path()
        if exe is None:
            raise CdpError("chromium is not installed")
        self.profile = tempfile.mkdtemp(prefix="pf-chromium-")
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()

        def fds() -> None:  # runs in the child: the pipe ends on fds 3 and 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "--remote-debugging-pipe", "about:blank"],
            pass_fds=(3, 4), preexec_fn=fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    # protocol -------------------------------------------------------------------------------
    def call(self, method: str, timeout: float = 15.0, **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for m in self._drain(deadline, method):
                if m.get("id") == self._id:
                    if "error" in m:
                        raise CdpError(f"{method}: {m['error']}")
                    return m.get("result", {})
                self.events.append(m)

    def _drain(self, deadline: float, what: str) -> list[dict[str, Any]]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError(f"no answer from chromium to {what}")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise CdpError("chromium closed the pipe")
                self._buf += chunk
        out = []
        while b"\0" in self._buf:
            raw, self._buf = self._buf.split(b"\0", 1)
            out.append(json.loads(raw))
        return out

    # helpers ----------------------------------------------------------------------------------
    def eval(self, expression: str, timeout: float = 15.0) -> Any:
        """Evaluate JS in the page (promises awaited) and return its JSON value."""
        r = self.call("Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True,
                      returnByValue=True)
        if "exceptionDetails" in r:
            raise CdpError(f"{expression[:80]}: {r['exceptionDetails'].get('exception', {}).get('description')}")
        return r["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait(self, js_condition: str, timeout: float = 10.0, what: str = "") -> Any:
        """Poll ``js_condition`` until truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.eval(f"(() => {{ try {{ return {js_condition}; }} catch (e) {{ return null; }} }})()")
            if v:
                return v
            if time.monotonic() > deadline:
                state = self.eval("document.getElementById('main') ? document.getElementById('main').dataset.state + ' ' + "
                                  "document.getElementById('main').innerText.slice(0, 300) : document.title")
                raise CdpError(f"timed out waiting for {what or js_condition}; page: {state}")
            time.sleep(0.05)

    def ready(self, view: str, timeout: float = 10.0) -> None:
        """Wait until the dashboard has rendered ``view`` (main[data-view][data-state=ready])."""
        self.wait(f"document.getElementById('main').dataset.view === {json.dumps(view)} && "
                  "document.getElementById('main').dataset.state === 'ready'", timeout, f"view {view}")

    def text(self, selector: str) -> str:
        return str(self.eval(f"document.querySelector({json.dumps(selector)}).textContent"))

    def texts(self, selector: str) -> list[str]:
        return list(self.eval(f"[...document.querySelectorAll({json.dumps(selector)})].map(e => e.textContent)"))

    def click(self, selector: str) -> None:
        self.eval(f"document.querySelector({json.dumps(selector)}).click()")

    def screenshot(self, path: Path, full_page: bool = True) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.eval("({w: document.documentElement.scrollWidth, h: document.documentElement.scrollHeight})")
            params["clip"] = {"x": 0, "y": 0, "width": size["w"], "height": min(size["h"], 4000), "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", timeout=30, **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (CdpError, OSError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)
