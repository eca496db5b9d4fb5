"""A real headless Chromium (Debian's chromium package) for page tests.

Two calls: the DOM after the page's scripts ran for a while (virtual time, so timers and
fetches complete without the test sleeping), and a PNG screenshot saved under test-artifacts/.
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

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
