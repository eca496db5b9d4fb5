"""What operators import (deploy/prometheus/, deploy/grafana/): the alert rules pass their
promtool unit tests, cover every runbook entry, and every alert and dashboard query names a
metric that a running web process's /metrics serves (scraped live, with real workers)."""

import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from project.storage import bucket_ensure
from tests.harness import ROOT, ProcessGroup, free_port

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "messy.json"
# The README's runbook entries, each with the alerts that page for it.
RUNBOOK_ALERTS = {
    "backlog growing": {"MessyBacklogGrowing"},
    "oldest staged message too old": {"MessyOldestStagedMessageTooOld"},
    "stats not published": {"MessyStatsNotPublished", "MessyStatsNeverPublished"},
    "dead letters": {"MessyDeadLetters"},
    "drain lag": {"MessyDrainLag"},
    "no live workers": {"MessyNoLiveIngestWorkers", "MessyNoLiveJobsWorkers"},
    "redis near its memory limit": {"MessyRedisNearMemoryLimit", "MessyWritesRefusedForBackpressure"},
    "error rate": {"MessyErrorRate"},
}
T = TypeVar("T")
METRIC_NAME = re.compile(r"\bmessy_[a-z0-9_]+")


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: install Debian's prometheus package (make test does: TEST_PACKAGES)"
    return path


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    def walk(panels: list[dict]) -> list[str]:
        found = []
        for panel in panels:
            found += [target["expr"] for target in panel.get("targets", [])]
            found += walk(panel.get("panels", []))
        return found

    return walk(json.loads(DASHBOARD.read_text())["panels"])


def test_the_alert_rules_pass_promtools_checks_and_unit_tests():
    for command in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        run = subprocess.run([promtool(), *command], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"promtool {' '.join(command)}:\n{run.stdout}\n{run.stderr}"


def test_every_runbook_entry_has_an_alert_and_every_alert_is_unit_tested():
    names = {rule["alert"] for rule in alert_rules()}
    for entry, alerts in RUNBOOK_ALERTS.items():
        assert alerts <= names, f"runbook entry {entry!r}: no alert rule {sorted(alerts - names)}"
    tested = {
        case["alertname"]
        for test in yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    assert names <= tested, f"alerts without a promtool unit test: {sorted(names - tested)}"
    for rule in alert_rules():
        assert rule["annotations"].get("runbook"), f"{rule['alert']} does not link its runbook entry"


def test_every_dashboard_query_names_a_messy_metric():
    queries = dashboard_queries()
    assert len(queries) >= 10
    for query in queries:
        assert METRIC_NAME.search(query), f"a dashboard query names no Messy metric: {query}"


def _text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def scrape(port: int) -> set[str]:
    text = _text(port)
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def live(check: Callable[[], T | None], timeout: float = 60) -> T | None:
    deadline = time.monotonic() + timeout
    while (result := check()) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    return result


@pytest.mark.django_db(transaction=True)
def test_every_alert_and_dashboard_query_names_a_metric_a_live_web_process_serves(
    subprocess_env: dict[str, str], artifacts_dir: Path, s3_server: str
):
    bucket_ensure()  # the ingest worker publishes the stats when it starts: then their age is served
    port = free_port()
    group = ProcessGroup({**subprocess_env, "WEB_ACCESS_LOG": "off"}, artifacts_dir)
    try:
        group.web(port, processes=1, name="monitoring-web")
        group.worker("monitoring-ingest", role="ingest", concurrency=1)
        group.worker("monitoring-jobs", role="jobs", concurrency=1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10):
            pass  # a request, so the web process has request counts to flush

        def served() -> set[str] | None:
            names = scrape(port)
            wanted = {"messy_http_requests_total", "messy_stats_last_publish_age_seconds"}
            return names if wanted <= names else None

        names = live(served)
        assert names, "/metrics never served the request counts (not flushed?) or the stats age (not published?)"

        def workers_counted() -> str | None:
            text = _text(port)
            counted = all(re.search(rf'messy_workers_live{{pool="{pool}"}} 1\.0', text) for pool in ("ingest", "jobs"))
            return text if counted else None

        assert live(workers_counted), "the live ingest and jobs workers are not counted by pool"
    finally:
        group.stop_all()

    queries = dashboard_queries() + [rule["expr"] for rule in alert_rules()]
    for query in queries:
        for name in METRIC_NAME.findall(query):
            assert name in names, f"{name!r} (in {query!r}) is not served by /metrics; it serves {sorted(names)}"
