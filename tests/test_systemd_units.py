"""The systemd units in deploy/systemd/: one per process, each as a user that is not root (but
the front door's nginx master), read-only system, private /tmp, settings from an EnvironmentFile,
and accepted by `systemd-analyze verify` (with the checkout standing in for /opt/messy)."""

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import ROOT

UNITS = ROOT / "deploy" / "systemd"
PROCESSES = {
    "messy-web.service": "runserver.sh",
    "messy-worker@.service": "runworker.sh",
    "messy-beat.service": "runbeat.sh",
    "messy-flower.service": "scripts/flower.sh",
    "messy-front.service": "scripts/front.sh",
}


def service(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser["Service"]


def test_there_is_a_unit_for_each_process():
    assert {path.name for path in UNITS.glob("*.service")} == set(PROCESSES)


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_each_unit_confines_its_process(name):
    unit = service(name)
    assert unit["ExecStart"].split()[0] == f"/opt/messy/{PROCESSES[name]}"
    assert unit["ProtectSystem"] == "strict"
    assert unit["PrivateTmp"] == "yes"
    assert unit["EnvironmentFile"] == "/etc/messy/messy.env"
    expected_user = "root" if name == "messy-front.service" else "messy"
    assert unit["User"] == expected_user
    if name == "messy-web.service":
        assert unit["Group"] == "messy-web", "the web socket's group: the front door's workers"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_every_unit(tmp_path: Path):
    for path in UNITS.glob("*.service"):
        text = path.read_text().replace("/opt/messy", str(ROOT))
        # A template unit is verified as one of its instances.
        (tmp_path / path.name.replace("@.", "@ingest.")).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(str(unit) for unit in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stdout + result.stderr
