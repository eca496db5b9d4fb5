"""`make loadtest`'s Locust file against the service through its front door, for a few seconds:
every kind of request it makes is answered as documented (Locust counts anything else as a
failure and exits with status 1)."""

import csv
import subprocess
import time

import pytest
import requests

from tests.harness import ROOT, VENV_BIN

pytestmark = pytest.mark.system


def test_the_load_test_drives_every_endpoint_without_a_failure(stack, tmp_path):
    stack.start_web()
    stack.start_worker()  # a starting worker publishes the stats, so /stat/get/ redirects
    front = stack.start_front()
    deadline = time.monotonic() + 90  # the worker's start (three Django processes on two cores) and its publish
    while requests.get(f"{front}/stat/get/", allow_redirects=False, timeout=10).status_code != 302:
        assert time.monotonic() < deadline, "the stats were not published"
        time.sleep(0.5)

    run = subprocess.run(
        [
            *(str(VENV_BIN / "locust"), "-f", "loadtest/locustfile.py", "--headless", "--only-summary"),
            *("--host", front, "--users", "5", "--spawn-rate", "5", "--run-time", "5s"),
            *("--csv", str(tmp_path / "run")),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with (tmp_path / "run_stats.csv").open() as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    for name in ("/message/write/", "/message/batch/ (100)", "/message/[id]/", "/stat/get/"):
        assert int(rows[name]["Request Count"]) > 0, name
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert "Response time percentiles" in run.stdout + run.stderr
