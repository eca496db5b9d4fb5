"""An erasure covers imports: an import queued or running when a user is erased never brings
their messages back once the erasure reported success, and the fence keeps no name."""

import threading
import time

import pytest
from django.db import transaction

from messages.models import Message
from tasks import services
from tasks.erasing import erasure_job_create
from tasks.fence import erasure_fence_raise, fence_lock_shared
from tasks.models import ErasureFence, Job
from tests.tasks.conftest import assert_rollups_exact, import_job, ndjson, payload, rows, store

pytestmark = pytest.mark.django_db(transaction=True)

USER = "eve-the-erased"


def erase(username: str = USER) -> Job:
    erasure = erasure_job_create(username)
    assert services.job_run(erasure.pk) == "succeeded"
    return erasure


def messages_of(username: str) -> list[str]:
    return [str(pk) for pk in Message.objects.filter(username=username).values_list("pk", flat=True)]


def test_an_import_queued_before_an_erasure_stores_none_of_the_users_records_after_it(s3):
    store([payload(USER) for _ in range(3)])
    queued = import_job(ndjson(rows(5, USER) + rows(7, "bob") + rows(2, USER, start=5)))

    erase()
    assert messages_of(USER) == []
    fences = list(ErasureFence.objects.values_list("digest", "erasure_id", "import_job_id"))
    assert [(erasure, job) for _, erasure, job in fences] == [(None, queued.pk)]
    assert USER not in fences[0][0]

    assert services.job_run(queued.pk) == "succeeded"
    queued.refresh_from_db()
    assert messages_of(USER) == []
    bob = messages_of("bob")
    assert len(bob) == len(set(bob)) == 7
    assert queued.result is not None
    assert (queued.result["valid"], queued.result["stored"], queued.result["skipped_erased"]) == (14, 7, 7)
    assert queued.result["rejected"] == 0  # skipped, not reported as bad records (with the name)
    assert ErasureFence.objects.count() == 0  # the import is done with it
    assert_rollups_exact()


def test_an_import_running_during_an_erasure_keeps_what_it_stored_of_others_and_nothing_of_the_user(s3, settings):
    settings.MESSY_IMPORT_BATCH_SIZE = 4
    data = ndjson([row for pair in zip(rows(6, USER), rows(6, "bob"), strict=True) for row in pair])
    running = import_job(data)
    settings.MESSY_JOB_RUN_SECONDS = -1  # hand over after the first batch, as a long import would
    assert services.job_run(running.pk) == "handed_over"
    assert len(messages_of(USER)) == 2

    erase()
    assert messages_of(USER) == []

    settings.MESSY_JOB_RUN_SECONDS = 600
    assert services.job_run(running.pk) == "succeeded"
    running.refresh_from_db()
    assert messages_of(USER) == []
    bob = messages_of("bob")
    assert len(bob) == len(set(bob)) == 6
    assert running.result is not None
    assert (running.result["stored"], running.result["skipped_erased"]) == (8, 4)
    assert_rollups_exact()


def test_an_import_created_after_the_erasure_succeeded_stores_the_user_again(s3):
    erase()
    assert ErasureFence.objects.count() == 0  # no import was unfinished: nothing kept
    later = import_job(ndjson(rows(3, USER)))
    assert services.job_run(later.pk) == "succeeded"
    assert len(messages_of(USER)) == 3
    assert_rollups_exact()


def test_while_an_erasure_runs_every_import_skips_the_user(s3):
    erasure = erasure_job_create(USER)
    erasure_fence_raise(erasure)
    job = import_job(ndjson(rows(2, USER) + rows(2, "bob")))
    assert services.job_run(job.pk) == "succeeded"
    assert messages_of(USER) == []
    assert len(messages_of("bob")) == 2


def test_a_fence_goes_up_only_after_the_import_batches_in_flight_committed():
    erasure = erasure_job_create(USER)
    holding = threading.Event()
    committing: list[float] = []

    def batch_in_flight() -> None:
        with transaction.atomic():
            fence_lock_shared()
            holding.set()
            time.sleep(0.5)
            committing.append(time.monotonic())  # the lock goes with the commit, just after

    thread = threading.Thread(target=batch_in_flight)
    thread.start()
    assert holding.wait(5)
    erasure_fence_raise(erasure)
    raised = time.monotonic()
    thread.join()
    assert committing and raised >= committing[0], "the fence went up while the batch held its lock"
    assert ErasureFence.objects.filter(erasure=erasure).count() == 1
    erasure_fence_raise(erasure)  # a resumed run raises it again: still one
    assert ErasureFence.objects.filter(erasure=erasure).count() == 1
