"""MESSY_RUN_DIR (scripts/common.sh): where this host's sockets and the front door's files go.
memcached and nginx's workers, started by root, run as nobody, so the folder must be one that
nobody can enter, also when the checkout is in a private folder (under /root, or mktemp -d)."""

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root's daemons become nobody")


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder straight under /tmp: pytest's tmp_path lies under /tmp/pytest-of-root (0700),
    which nobody cannot enter whatever the test's own folder allows."""
    made = Path(tempfile.mkdtemp(prefix="messy-run-dir-"))
    try:
        yield made
    finally:
        shutil.rmtree(made)


def checkout_in(folder: Path, mode: int) -> Path:
    """A checkout's scripts/common.sh, in `folder` with the given mode."""
    folder.mkdir(exist_ok=True)
    folder.chmod(mode)
    checkout = folder / "messy"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "common.sh", checkout / "scripts" / "common.sh")
    return checkout


def run_dir(checkout: Path, **env: str) -> Path:
    """MESSY_RUN_DIR once scripts/common.sh is sourced in `checkout`, with `env`."""
    sourced = subprocess.run(
        ["bash", "-c", '. scripts/common.sh && printf "%s" "$MESSY_RUN_DIR"'],
        cwd=checkout,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(sourced.stdout)


def nobody_can_enter(path: Path) -> bool:
    return subprocess.run(["runuser", "-u", "nobody", "--", "test", "-x", str(path)]).returncode == 0


@needs_root
def test_a_checkout_that_nobody_can_enter_keeps_its_run_dir_in_var_run(folder: Path):
    checkout = checkout_in(folder, 0o755)
    assert run_dir(checkout) == checkout / "var" / "run"


@needs_root
def test_a_checkout_in_a_private_folder_gets_a_run_dir_under_run_that_nobody_can_enter(folder: Path):
    checkout = checkout_in(folder, 0o700)
    assert not nobody_can_enter(checkout)
    made = run_dir(checkout)
    try:
        assert made.parent == Path("/run/messy")
        assert nobody_can_enter(made)
        assert stat.S_IMODE(made.stat().st_mode) == 0o755
        # The same checkout always gets the same folder; another checkout another one.
        assert run_dir(checkout) == made
        other = checkout_in(folder / "other", 0o700)
        assert run_dir(other) != made
        run_dir(other).rmdir()
    finally:
        made.rmdir()


def test_a_run_dir_from_the_settings_is_kept(folder: Path):
    checkout = checkout_in(folder, 0o700)
    assert run_dir(checkout, MESSY_RUN_DIR="somewhere/run") == checkout / "somewhere" / "run"
