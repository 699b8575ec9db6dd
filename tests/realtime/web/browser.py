"""A real browser for the web view's tests: headless Chromium, driven over the DevTools protocol.

The protocol is JSON over a WebSocket (https://chromedevtools.github.io/devtools-protocol/):
``Page.navigate``, ``Runtime.evaluate`` (read the page's DOM), ``Page.captureScreenshot``.  A
few calls need no client library beyond ``websockets``.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

EXECUTABLES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str | None:
    """The browser's executable, or None (the tests that need it skip, saying why)."""
    return next((path for name in EXECUTABLES if (path := shutil.which(name))), None)


class Browser:
    """One headless Chromium with one page.  ``profile``: an empty folder for its user data."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 800):
        executable = chromium()
        assert executable, "no Chromium (apt-get install chromium)"
        profile.mkdir(parents=True, exist_ok=True)
        self.log = profile / "chromium.log"
        self.proc = subprocess.Popen(
            [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--hide-scrollbars", "--remote-debugging-port=0",
             "--remote-allow-origins=*", f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"),
        )  # fmt: skip
        try:
            port = self._devtools_port(profile / "DevToolsActivePort")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
                page = next(t for t in json.load(answer) if t["type"] == "page")
            # Entered as a context (websockets 17.1 deprecates a bare connect(); its legacy=True
            # would refuse the older versions that pyproject allows), left in close().
            self.ws = connect(page["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=10).__enter__()
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        self._id = 0
        self.call("Page.enable")
        # The viewport itself (--window-size counts the window's frame too).
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def _devtools_port(self, path: Path, timeout_s: float = 30) -> int:
        deadline = time.monotonic() + timeout_s
        while not (path.exists() and path.read_text().strip()):
            assert self.proc.poll() is None, f"Chromium exited: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"Chromium did not start: {self.log.read_text()[-2000:]}"
            time.sleep(0.05)
        return int(path.read_text().split()[0])

    def call(self, method: str, timeout_s: float = 30, **params) -> dict:
        """One DevTools command; its result (events that arrive meanwhile are skipped)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == self._id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply["result"]

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-able)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float, what: str):
        """Evaluate until the value is truthy; returns it.  Fails with ``what`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not (value := self.evaluate(expression)):
            assert time.monotonic() < deadline, f"the page never showed {what} within {timeout_s:g} s"
            time.sleep(0.1)
        return value

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
