"""A real headless Chromium (Debian's chromium package) for page tests.

Two calls: the DOM after the page's scripts ran for a while (virtual time, so timers and
fetches complete without the test sleeping), and a PNG screenshot saved under test-artifacts/.
"""

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

# The flags the machine's documentation gives for Chromium on a closed network, as root.
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("chromium is not installed: run `make test`, which installs it")
    return path


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [chromium_path(), *_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def page_dom(url: str, budget_ms: int = 5000, timeout: float = 60) -> str:
    """The serialised DOM of url after budget_ms of (virtual) time."""
    result = _run([f"--virtual-time-budget={budget_ms}", "--dump-dom", url], timeout)
    if result.returncode != 0:
        raise AssertionError(f"chromium failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def page_screenshot(url: str, path: Path, budget_ms: int = 5000, size: str = "1280,1000", timeout: float = 60) -> Path:
    """Save a PNG of url after budget_ms of (virtual) time; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    result = _run([f"--virtual-time-budget={budget_ms}", f"--window-size={size}", f"--screenshot={path}", url], timeout)
    if result.returncode != 0 or not path.exists() or path.stat().st_size == 0:
        raise AssertionError(f"chromium made no screenshot ({result.returncode}): {result.stderr[-2000:]}")
    return path


class Tab:
    """One Chromium page driven over the DevTools protocol, for tests that look at the page
    as a reader does: run JavaScript in it (bounding boxes, visibility, text), move the mouse,
    set cookies, emulate a phone's width or a time zone, and save full-page screenshots.

    The protocol runs over a pipe (--remote-debugging-pipe: fd 3 to the browser, fd 4 back,
    each message JSON ended by NUL), so no WebSocket package is needed. Real time, not
    virtual: wait_for() polls a condition.
    """

    def __init__(self, width: int = 1280, height: int = 900, timezone: str = "") -> None:
        import json
        import os

        self._json = json
        self._profile = tempfile.TemporaryDirectory()
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def pipes_at_3_and_4() -> None:
            import fcntl

            # Out of the way first, so that neither dup2 overwrites the other's source.
            read = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
            write = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            [chromium_path(), *_FLAGS, f"--user-data-dir={self._profile.name}", "--remote-debugging-pipe"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=pipes_at_3_and_4,
            close_fds=False,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session = ""
        target = self.send("Target.createTarget", url="about:blank", session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True, session=False)["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.resize(width, height)
        if timezone:
            self.send("Emulation.setTimezoneOverride", timezoneId=timezone)

    def send(self, method: str, session: bool = True, **params: object) -> dict:
        import os
        import time

        self._next_id += 1
        message: dict = {"id": self._next_id, "method": method, "params": params}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, self._json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            while b"\0" not in self._buffer:
                assert time.monotonic() < deadline, f"no answer to {method}"
                chunk = os.read(self._from_browser, 1 << 16)
                assert chunk, "chromium closed the pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = self._json.loads(raw)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise AssertionError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def resize(self, width: int, height: int) -> None:
        self.width = width
        self.send(
            "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=width < 600
        )

    def cookie(self, url: str, name: str, value: str) -> None:
        self.send("Network.setCookie", url=url, name=name, value=value)

    def open(self, url: str, ready: str = "document.readyState === 'complete'", timeout: float = 15) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for(ready, timeout)

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able; promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15) -> Any:
        import time

        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.05)

    def mouse_move(self, x: float, y: float) -> None:
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (not just the viewport)."""
        import base64

        path.parent.mkdir(parents=True, exist_ok=True)
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": max(self.width, size["width"]), "height": size["height"], "scale": 1}
        data = self.send("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        import os

        with contextlib.suppress(AssertionError, OSError):
            self.send("Browser.close", session=False)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._profile.cleanup()

    def __enter__(self) -> "Tab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
