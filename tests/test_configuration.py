"""Configuration is documented in one place: every environment variable that a run script,
a helper script or the settings read appears in local.sh.template."""

import re

from tests.conftest import ROOT

TEMPLATE = (ROOT / "local.sh.template").read_text()
# Settings (KEY=value) and documented defaults (# KEY=value): tests/test_local_sh.py checks the form.
DOCUMENTED = set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", TEMPLATE, re.MULTILINE))
SCRIPTS = [
    *ROOT.glob("run*.sh"),
    *(ROOT / "scripts").glob("*.sh"),
    ROOT / "Procfile",
]
# Set by bash or the system, not configuration.
NOT_CONFIGURATION = {"BASH_SOURCE", "PATH", "PYTHONUNBUFFERED", "MESSY_ROOT"}
# Read by a benchmark's own script only (scripts/bench.sh: which bench module to run).
NOT_CONFIGURATION |= {"BENCH_MODULE"}


def test_every_variable_a_script_reads_is_in_the_template() -> None:
    read = set()
    for script in SCRIPTS:
        read |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", script.read_text()))
    missing = sorted(read - DOCUMENTED - NOT_CONFIGURATION)
    assert not missing, f"read by the scripts but not in local.sh.template: {missing}"


def test_every_variable_the_settings_read_is_in_the_template() -> None:
    read = set()
    for module in (ROOT / "project").glob("settings*.py"):
        read |= set(re.findall(r'env_[a-z]+\(\s*"([A-Z][A-Z0-9_]*)"', module.read_text()))
    missing = sorted(read - DOCUMENTED)
    assert not missing, f"read by the settings but not in local.sh.template: {missing}"
