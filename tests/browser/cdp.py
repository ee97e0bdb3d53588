"""A minimal client of the Chrome DevTools Protocol over ``--remote-debugging-pipe``.

Chromium reads commands from its fd 3 and writes replies and events to its fd 4, each message
one JSON object ended by a NUL byte: no port, no websocket library.  Enough to open a page,
press keys, click, and read the page's state with ``Runtime.evaluate``.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import time
from pathlib import Path

TIMEOUT = 60.0


class CdpError(Exception):
    pass


class Browser:
    def __init__(self, chromium: str, profile: Path, width: int, height: int):
        to_r, to_w = os.pipe()          # our commands: Chromium's fd 3
        from_r, from_w = os.pipe()      # its replies: Chromium's fd 4

        def fds_3_and_4():
            a, b = os.dup(to_r), os.dup(from_w)     # out of the way of 3 and 4 first
            os.dup2(a, 3)
            os.dup2(b, 4)

        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--hide-scrollbars", "--remote-debugging-pipe", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            preexec_fn=fds_3_and_4, close_fds=False, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, HOME=str(profile)))
        os.close(to_r)
        os.close(from_w)
        self._w, self._r = to_w, from_r
        self._buf = b""
        self._id = 0
        self.session = ""

    def send(self, method: str, **params) -> dict:
        """Send one command (to the attached page, once there is one) and wait for its reply."""
        self._id += 1
        msg: dict = {"id": self._id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            while b"\0" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._r], [], [], left)[0]:
                    raise CdpError(f"{method}: no reply from Chromium in {TIMEOUT:.0f} s")
                chunk = os.read(self._r, 1 << 16)
                if not chunk:
                    raise CdpError(f"{method}: Chromium closed the pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") != self._id:
                continue                    # an event, or a reply we no longer wait for
            if "error" in reply:
                raise CdpError(f"{method}: {reply['error']}")
            return reply["result"]

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", url=url)["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]

    def eval(self, expression: str):
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise CdpError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.05)
        raise CdpError(f"still false after {timeout:.0f} s: {expression}")

    def key(self, key: str, code: int) -> None:
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key=key, code=key,
                      windowsVirtualKeyCode=code)

    def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) at the middle of the element."""
        x, y = self.eval("(function () { var r = document.querySelector(" + json.dumps(selector)
                         + ").getBoundingClientRect(); return [r.x + r.width / 2, "
                         "r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                      clickCount=1)

    def close(self) -> None:
        try:
            self.session = ""
            self.send("Browser.close")
        except (CdpError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)
