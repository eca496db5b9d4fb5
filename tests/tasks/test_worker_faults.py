"""kill -9 of a real `celery worker` in the middle of an import and of an erasure: another
worker resumes the job from its checkpoint and the outcome is exactly that of a run that never
died: every good record stored once, every bad one reported once, rollups equal a recount,
the erasure counted once."""

import time
from collections.abc import Callable

import pytest
import requests

from messages import staging
from messages.models import Message
from messages.services import WriteRequest, messages_accept
from messages.validation import MessageInput
from tasks import selectors, services
from tasks.models import Job
from tests.tasks.conftest import assert_rollups_exact, ndjson, payload, rows, store

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.system]

STALE_SECONDS = 2
WORKER_ENV = {"MESSY_JOB_STALE_SECONDS": str(STALE_SECONDS), "LOG_LEVEL": "INFO"}


def job_state(job_id: str) -> Job:
    return Job.objects.get(pk=job_id)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {list(Job.objects.values('status', 'checkpoint'))}")
        time.sleep(0.02)


def kill_mid_run_and_resume(workers, settings, job_id: str, progressed: Callable[[Job], bool], **env: str) -> Job:
    """Run the job on a worker, kill -9 it once `progressed`, then let recovery hand the job to
    a second worker; return the finished job."""
    first = workers(**WORKER_ENV, **env)
    wait_for(lambda: progressed(job_state(job_id)), 60, f"the job to make progress: {job_id}")
    first.kill9()
    died = job_state(job_id)
    assert died.status == "running", "the job finished before the worker was killed; make it longer"
    workers(**WORKER_ENV, **env)
    time.sleep(STALE_SECONDS + 0.5)
    settings.MESSY_JOB_STALE_SECONDS = STALE_SECONDS  # pytest-django's fixture: undone after the test
    assert services.jobs_recover() == 1  # what the beat schedule does twice a minute
    wait_for(lambda: job_state(job_id).is_finished, 180, "the resumed job to finish")
    return job_state(job_id)


def test_an_import_whose_worker_is_killed_mid_file_ends_exactly_as_if_it_had_not_died(s3, api, workers, settings):
    lines: list = rows(60_000)
    bad = range(500, 60_000, 1000)  # 0-based positions of the bad records
    for position in bad:
        lines[position] = "{broken" if position % 2000 == 500 else {"username": "x", "city": "y"}
    response = api.post("/tasks/import/", data=ndjson(lines), content_type="application/x-ndjson")
    job_id = response.json()["id"]

    job = kill_mid_run_and_resume(
        workers, settings, job_id, lambda job: job.checkpoint.get("records", 0) >= 3000, MESSY_IMPORT_BATCH_SIZE="300"
    )

    assert (job.status, job.attempts) == ("succeeded", 1)
    assert job.result == {
        "file": "upload",
        "format": "ndjson",
        "records": 60_000,
        "valid": 60_000 - len(bad),
        "stored": 60_000 - len(bad),
        "rejected": len(bad),
        "skipped_erased": 0,
    }
    assert Message.objects.count() == 60_000 - len(bad)
    assert_rollups_exact()
    report = requests.get(api.get(f"/tasks/jobs/{job_id}/report/")["Location"], timeout=10).json()
    assert [error["line"] for error in report["errors"]] == [position + 1 for position in bad]


def test_an_erasure_whose_worker_is_killed_mid_way_ends_exactly_as_if_it_had_not_died(
    api, workers, settings, artifacts_dir
):
    user = "mallory-to-erase"
    for start in range(0, 30_000, 5000):
        store(
            [
                payload(user, city=f"c{i % 50}", state=f"S{i % 7}", accepted_at=1_764_000_000_000 + i * 997)
                for i in range(start, start + 5000)
            ]
        )
    store([payload("bob", city="c1", state="S1") for _ in range(500)])
    messages_accept(WriteRequest([MessageInput(user, "Nice", "PAC", f"staged {i}") for i in range(5)]))
    response = api.post("/tasks/erase/", {"username": user}, content_type="application/json")
    job_id = response.json()["id"]

    job = kill_mid_run_and_resume(
        workers, settings, job_id, lambda job: job.progress_done >= 3000, MESSY_ERASE_BATCH_SIZE="200"
    )

    assert (job.status, job.attempts, job.subject) == ("succeeded", 1, "")
    assert job.result == {"messages_erased": 30_000, "staged_erased": 5}
    assert not Message.objects.filter(username=user).exists()
    assert Message.objects.filter(username="bob").count() == 500
    assert_rollups_exact()
    assert selectors.erasure_count() == 1
    assert staging.backlog() == 0
    worker_logs = "".join(
        path.read_text(errors="replace") for path in artifacts_dir.glob("tasks-worker-test_an_erasure*")
    )
    assert "tasks.run_job" in worker_logs and user not in worker_logs
