"""The progress page in a real headless Chromium: it follows a job live (polling the JSON
API, no reload) and then shows the result or the error; staff may cancel; an expired link
stops the polling. Screenshots go to test-artifacts/job-*.png."""

import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import requests
from django.conf import settings as django_settings
from django.core.signals import request_started
from django.db import transaction
from django.test import Client
from django.utils import timezone

from tasks import services
from tasks.auth import page_token
from tasks.models import Job
from tests.browser import Tab, page_dom
from tests.tasks.conftest import import_job, ndjson, rows, staff_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

VISIBLE_TEXT = (
    "(s => { const e = document.querySelector(s);"
    " return e && e.checkVisibility() ? (e.innerText ?? e.textContent) : null; })"
)


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def page_url(live_server, job: Job, link: bool = True) -> str:
    return f"{live_server.url}/tasks/{job.pk}/" + (f"?t={page_token(job.pk)}" if link else "")


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


@pytest.fixture
def tab() -> Iterator[Tab]:
    with Tab(900, 900) as browser:
        yield browser


@pytest.fixture
def staff_tab(tab: Tab, live_server, django_user_model) -> Tab:
    """A browser with an admin's session cookie, as after logging in at /admin/."""
    client = Client()
    client.force_login(staff_user("ops", "admin"))
    tab.cookie(
        live_server.url, django_settings.SESSION_COOKIE_NAME, client.cookies[django_settings.SESSION_COOKIE_NAME].value
    )
    return tab


def visible(tab: Tab, selector: str) -> str | None:
    return tab.js(f"{VISIBLE_TEXT}({selector!r})")


def shown_seconds(duration: str) -> int:
    """Seconds in a duration as job.js writes it: "42 s" or "1 min 36 s"."""
    match = re.fullmatch(r"(?:(\d+) min )?(\d+) s", duration)
    assert match, duration
    return 60 * int(match[1] or 0) + int(match[2])


def shown(tab: Tab, status: str) -> None:
    """Wait until the page has read the job (not just rendered it) and shows `status`."""
    job = "document.getElementById('job').dataset"
    tab.wait_for(f"{job}.status === {status!r} && {job}.seen.split(' ').includes({status!r})")


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
    assert re.search(r'<th scope="row">stored</th><td>4</td>', html)
    assert re.search(r'<th scope="row">rejected</th><td>1</td>', html)
    assert f'href="/tasks/jobs/{job.pk}/report/?t=' in html
    assert 'style="width: 100%;"' in html
    # Completion is announced politely, once, in the live region.
    assert re.search(r'id="announce" aria-live="polite">Import messages succeeded\. 4 stored\. 1 rejected', html)


def test_while_running_the_page_shows_times_elapsed_rate_and_time_left(live_server, s3, artifacts_dir, tab):
    job = import_job(ndjson(rows(40)), name="people.ndjson")
    assert services.job_claim(job.pk, "page-test")
    job.refresh_from_db()
    with transaction.atomic():
        services.JobRun(job, "page-test", float("inf")).checkpoint(
            done=job.progress_total // 4, message="A quarter.", state={}
        )
    # Started 30 s ago: a quarter done, so about 90 s to go at the same rate.
    Job.objects.filter(pk=job.pk).update(
        created_at=timezone.now() - timedelta(seconds=40), started_at=timezone.now() - timedelta(seconds=30)
    )

    tab.open(page_url(live_server, job))
    shown(tab, "running")
    tab.wait_for("/\\d s$/.test(document.getElementById('elapsed').textContent)")
    tab.screenshot(artifacts_dir / "job-running.png")

    assert visible(tab, "#created-at") not in (None, "\N{EN DASH}")
    assert "UTC" in str(tab.js("document.getElementById('started-at').title"))
    assert visible(tab, "#finished-at") == "not yet"
    assert (visible(tab, "#rate") or "").endswith("bytes/s")
    # Read together: the page redraws every second, and a slow machine may take seconds to get
    # here, so the times are checked against each other, not against the 30 s they started at.
    elapsed, eta = tab.js("['elapsed', 'eta'].map((id) => document.getElementById(id).textContent)")
    # The page's clock is the server's to the second (from the Date header): 30 s may show as 29.
    assert 29 <= shown_seconds(elapsed) < 120, elapsed
    assert (
        eta.startswith("about ") and abs(shown_seconds(eta.removeprefix("about ")) - 3 * shown_seconds(elapsed)) <= 3
    ), (
        elapsed,
        eta,
    )
    assert tab.js("document.getElementById('bar').getAttribute('aria-valuenow')") == "25"
    assert tab.js("document.getElementById('progress-label').textContent") == "Import messages: progress"
    html = requests.get(page_url(live_server, job), timeout=5).text
    assert re.findall(r"<script(?![^>]*\ssrc=)[^>]*>|<style|\sstyle=|\son[a-z]+=", html) == [], "CSP-ready"
    services.job_cancel(job)


def test_a_finished_job_shows_when_it_ran_and_hides_rate_and_time_left(live_server, s3, artifacts_dir, tab):
    job = import_job(ndjson(rows(4)), name="people.ndjson")
    assert services.job_run(job.pk) == "succeeded"

    tab.open(page_url(live_server, job))
    shown(tab, "succeeded")
    tab.screenshot(artifacts_dir / "job-succeeded.png")

    assert visible(tab, "#finished-at") not in (None, "not yet")
    assert re.fullmatch(r"\d+ s", visible(tab, "#elapsed") or "")
    assert visible(tab, "#rate") is None and visible(tab, "#eta") is None
    assert visible(tab, "#status") == "succeeded"


def test_the_report_link_appears_only_when_something_was_rejected(live_server, s3, tab):
    clean = import_job(ndjson(rows(3)), name="clean.ndjson")
    assert services.job_run(clean.pk) == "succeeded"
    tab.open(page_url(live_server, clean))
    shown(tab, "succeeded")

    assert visible(tab, "#result") is not None
    assert visible(tab, "#report") is None
    assert "rejected" not in str(tab.js("document.getElementById('announce').textContent"))

    messy = import_job(ndjson([*rows(3), "{bad json"]), name="messy.ndjson")
    assert services.job_run(messy.pk) == "succeeded"
    tab.open(page_url(live_server, messy))
    shown(tab, "succeeded")

    assert (visible(tab, "#report") or "").startswith("Download the error report")


def test_the_page_shows_why_a_job_failed_in_an_alert(live_server, s3, artifacts_dir, tab):
    job = import_job(b"username,city,message\nana,Lyon,hi\n", name="bad.csv")
    services.job_run(job.pk)

    tab.open(page_url(live_server, job))
    shown(tab, "failed")
    tab.screenshot(artifacts_dir / "job-failed.png")

    assert (visible(tab, "#error") or "").startswith("The CSV header lacks the column(s): state.")
    assert tab.js("document.getElementById('error').getAttribute('role')") == "alert"
    assert "Import messages failed." in str(tab.js("document.getElementById('announce').textContent"))
    assert visible(tab, "#report") is None


def test_staff_can_cancel_a_job_from_the_page(live_server, staff_tab, artifacts_dir):
    job = services.job_create(Job.Kind.ERASE, subject="x", enqueue=False)

    staff_tab.open(page_url(live_server, job, link=False))
    shown(staff_tab, "queued")
    assert visible(staff_tab, "#cancel") == "Cancel job"
    staff_tab.screenshot(artifacts_dir / "job-cancel.png")

    staff_tab.js("document.getElementById('cancel').click()")
    shown(staff_tab, "cancelled")

    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert visible(staff_tab, "#cancel") is None
    assert visible(staff_tab, "#problem") is None
    assert staff_tab.js("document.getElementById('announce').textContent").startswith(
        "Erase a user's messages cancelled."
    )
    staff_tab.screenshot(artifacts_dir / "job-cancelled.png")


def test_a_viewer_with_only_the_link_gets_no_cancel_button(live_server, tab):
    job = services.job_create(Job.Kind.ERASE, subject="x", enqueue=False)

    tab.open(page_url(live_server, job))
    shown(tab, "queued")

    assert tab.js("document.getElementById('cancel')") is None


def test_the_view_offers_cancelling_to_a_token_and_to_staff_but_not_to_the_link(live_server, api, admin_client):
    job = services.job_create(Job.Kind.ERASE, subject="x", enqueue=False)
    path = f"/tasks/{job.pk}/"

    assert 'id="cancel"' in api.get(path).content.decode()
    assert 'id="cancel"' in admin_client.get(path).content.decode()
    assert 'id="cancel"' not in Client().get(f"{path}?t={page_token(job.pk)}").content.decode()


def test_when_the_link_expires_the_page_stops_polling_and_says_so(live_server, settings, artifacts_dir, tab):
    job = services.job_create(Job.Kind.ERASE, subject="x", enqueue=False)
    polls = Polls(job)
    try:
        tab.open(page_url(live_server, job))
        shown(tab, "queued")
        polls.wait_for(1)
        settings.MESSY_JOB_PAGE_TOKEN_MAX_AGE = -1  # every link is now too old

        problem = str(tab.wait_for(f"{VISIBLE_TEXT}('#problem')"))
        tab.screenshot(artifacts_dir / "job-link-expired.png")
        stopped_at = polls.count
        time.sleep(3.5)  # three polling intervals

        assert polls.count == stopped_at, "the page kept polling"
    finally:
        polls.close()
    assert problem.startswith("This link has expired or is not valid for this job.")
    assert "stopped updating" in problem
    assert tab.js("document.getElementById('problem').getAttribute('role')") == "alert"
    assert tab.js("document.getElementById('job').dataset.polling") == "stopped"


def test_the_page_without_a_link_or_session_is_refused(live_server):
    job = services.job_create(Job.Kind.ERASE, subject="x", enqueue=False)
    assert '"authentication_required"' in page_dom(f"{live_server.url}/tasks/{job.pk}/", budget_ms=1000)
