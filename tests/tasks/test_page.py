"""The progress page in a real headless Chromium: it follows a job live (polling the JSON
API, no reload) and then shows the result or the error. Screenshots go to test-artifacts/."""

import re
import threading
import time
from collections.abc import Callable

import pytest
from django.core.signals import request_started
from django.db import transaction

from tasks import services
from tasks.auth import page_token
from tasks.models import Job
from tests.browser import page_dom, page_screenshot
from tests.tasks.conftest import import_job, ndjson, rows

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def page_url(live_server, job: Job) -> str:
    return f"{live_server.url}/tasks/{job.pk}/?t={page_token(job.pk)}"


class Polls:
    """Counts the page's reads of its job, as the live server receives them."""

    def __init__(self, job: Job) -> None:
        self.path = f"/tasks/jobs/{job.pk}/"
        self.count = 0
        request_started.connect(self.seen)

    def seen(self, sender, environ, **kwargs) -> None:
        if environ.get("PATH_INFO") == self.path:
            self.count += 1

    def wait_for(self, more: int) -> None:
        target = self.count + more
        wait_until(lambda: self.count >= target)

    def close(self) -> None:
        request_started.disconnect(self.seen)


def test_the_page_follows_a_job_live_and_then_shows_the_result_and_report_link(live_server, s3, artifacts_dir):
    job = import_job(ndjson([*rows(4), "{bad json"]), name="people.ndjson")
    polls = Polls(job)
    dom: list[str] = []
    # Virtual time: the page's 1 s polling interval passes at once, real fetches do not; the
    # budget only has to outlast the steps below (the page stops polling when the job ends).
    browser = threading.Thread(
        target=lambda: dom.append(page_dom(page_url(live_server, job), budget_ms=3_600_000, timeout=120))
    )
    browser.start()
    try:
        # The page polls one read after another, so a second read means it has shown the first.
        polls.wait_for(2)  # the page has shown "queued"
        assert services.job_claim(job.pk, "page-test")
        job.refresh_from_db()
        with transaction.atomic():
            services.JobRun(job, "page-test", float("inf")).checkpoint(
                done=job.progress_total // 2, message="Half way.", state={}
            )
        polls.wait_for(2)  # ... and "running" at 50 %
        page_screenshot(page_url(live_server, job), artifacts_dir / "tasks-job-page-running.png")
        services.job_release(job.pk, "page-test")
        assert services.job_run(job.pk) == "succeeded"
        browser.join(60)
    finally:
        polls.close()
    html = dom[0]
    history = re.search(r'data-seen="([^"]*)"', html)
    assert history
    seen = history.group(1).split()
    assert seen[0] == "queued" and "running" in seen and seen[-1] == "succeeded", seen
    assert 'data-status="succeeded"' in html
    assert re.search(r"<td>stored</td><td>4</td>", html)
    assert re.search(r"<td>rejected</td><td>1</td>", html)
    assert f'href="/tasks/jobs/{job.pk}/report/?t=' in html
    assert 'style="width: 100%;"' in html
    page_screenshot(page_url(live_server, job), artifacts_dir / "tasks-job-page-succeeded.png")


def test_the_page_shows_why_a_job_failed(live_server, s3, artifacts_dir):
    job = import_job(b"username,city,message\nana,Lyon,hi\n", name="bad.csv")
    services.job_run(job.pk)
    html = page_dom(page_url(live_server, job), budget_ms=5000)
    assert 'data-status="failed"' in html
    assert "The CSV header lacks the column(s): state." in html
    path = page_screenshot(page_url(live_server, job), artifacts_dir / "tasks-job-page-failed.png")
    assert path.stat().st_size > 5000


def test_the_page_without_a_link_or_session_is_refused(live_server):
    job = services.job_create(Job.Kind.ERASE, subject="x", enqueue=False)
    assert '"authentication_required"' in page_dom(f"{live_server.url}/tasks/{job.pk}/", budget_ms=1000)
