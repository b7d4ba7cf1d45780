"""A page in headless Chromium, driven over the DevTools protocol (``--remote-debugging-pipe``).

No browser-automation package: Chromium reads NUL-terminated JSON commands on fd 3 and
writes replies and events on fd 4. The page's console errors and uncaught exceptions are
collected from the moment it loads.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Page:
    """``Page(url)``: a headless Chromium tab at ``url``; ``evaluate``, ``screenshot``, ``errors``."""

    def __init__(self, url: str, *, width: int = 1400, height: int = 1000, timeout: float = 60.0) -> None:
        chromium = find_chromium()
        if chromium is None:
            raise FileNotFoundError("no chromium on PATH")
        import fcntl

        to_browser_r, self._write = os.pipe()
        self._read, from_browser_w = os.pipe()
        # above 4 first, so that placing one end on 3 or 4 in the child cannot overwrite the other
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]
        os.close(to_browser_r)
        os.close(from_browser_w)
        to_browser_r, from_browser_w = high
        # Chromium expects the pipe on fds 3 (its input) and 4 (its output).
        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--no-first-run", "--disable-extensions", f"--window-size={width},{height}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=_dup_to(to_browser_r, from_browser_w),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer, self._next, self.timeout = b"", 0, timeout
        self.errors: list[str] = []
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable", session=self.session)
        self.send("Emulation.setDeviceMetricsOverride", session=self.session, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.send("Page.navigate", session=self.session, url=url)
        self._wait_event("Page.loadEventFired")

    def send(self, method: str, session: str | None = None, **params) -> dict:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", session=self.session, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0):
        """Poll ``expression`` until it is truthy (the page's scripts have rendered it)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = self.evaluate(expression)
            if value:
                return value
            self._drain(0.2)
        raise TimeoutError(f"{expression!r} still false after {timeout} s")

    def screenshot(self, out: str | os.PathLike) -> Path:
        data = self.send("Page.captureScreenshot", session=self.session, format="png")["data"]
        Path(out).write_bytes(base64.b64decode(data))
        return Path(out)

    def close(self) -> None:
        try:
            os.write(self._write, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._write)
            os.close(self._read)

    def __enter__(self) -> Page:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the pipe ----------------------------------------------------------------
    def _receive(self, timeout: float | None = None) -> dict:
        import select

        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\0" not in self._buffer:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError("no message from chromium")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited (code {self.proc.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        self._record(message)
        return message

    def _record(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details.get("text", ""))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(f"{params['entry']['source']}: {params['entry']['text']}")

    def _wait_event(self, name: str) -> None:
        end = time.monotonic() + self.timeout
        while time.monotonic() < end:
            if self._receive(end - time.monotonic()).get("method") == name:
                return
        raise TimeoutError(f"no {name} within {self.timeout} s")

    def _drain(self, seconds: float) -> None:
        """Read the events that arrive within ``seconds`` (console errors among them)."""
        try:
            while True:
                self._receive(seconds)
        except TimeoutError:
            pass


def _dup_to(read_end: int, write_end: int):
    def child() -> None:
        os.dup2(read_end, 3)
        os.dup2(write_end, 4)

    return child
