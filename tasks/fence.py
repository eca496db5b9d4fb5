"""The erasure fence: keeps imports from bringing back an erased user's messages. Both the
erasure job (raises a fence, hands it over) and the import job (skips fenced users, in the
transaction that stores a batch) use it; neither imports the other.

# Documented in docs/jobs.md ("The erasure fence").
"""

from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils.crypto import salted_hmac

from tasks.models import ErasureFence, Job

# Any constant that no other code uses for an advisory lock ("messy-erasure-fence", as digits).
FENCE_LOCK = 0x6D657373795F6665


def fence_lock_shared() -> None:
    """Hold the fence lock shared until the current transaction ends: for an import batch or
    an import job's creation, so that a fence going up or handed over waits for them."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [FENCE_LOCK])


def _fence_lock_exclusive() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [FENCE_LOCK])


def username_digest(username: str) -> str:
    """A keyed digest of a username: matches the same name again, and says nothing without
    SECRET_KEY (a plain hash of a name is reversed by hashing guesses)."""
    return salted_hmac("messy.tasks.erasure-fence", username, algorithm="sha256").hexdigest()


def erasure_fence_raise(erasure: Job) -> None:
    """From now on every import skips the user. Idempotent."""
    with transaction.atomic():
        _fence_lock_exclusive()
        if not ErasureFence.objects.filter(erasure=erasure).exists():
            ErasureFence.objects.create(digest=username_digest(erasure.subject), erasure=erasure)


def fence_hand_over(erasure_id: Any) -> None:
    """In the transaction that finishes the erasure: its fence passes to every import then
    unfinished, and is lifted for the rest."""
    digests = list(ErasureFence.objects.filter(erasure_id=erasure_id).values_list("digest", flat=True))
    if not digests:
        return  # never started, so never fenced
    _fence_lock_exclusive()
    unfinished = Job.objects.filter(kind=Job.Kind.IMPORT, status__in=(Job.Status.QUEUED, Job.Status.RUNNING))
    ErasureFence.objects.bulk_create(
        [
            ErasureFence(digest=digest, import_job_id=job_id)
            for job_id in unfinished.values_list("pk", flat=True)
            for digest in digests
        ]
    )
    ErasureFence.objects.filter(erasure_id=erasure_id).delete()


def erased_digests(import_job_id: Any) -> set[str]:
    """The digests of the users an import must skip, inside the caller's transaction (which
    then holds the fence lock shared until it ends)."""
    fence_lock_shared()
    fences = ErasureFence.objects.filter(Q(erasure__isnull=False) | Q(import_job_id=import_job_id))
    return set(fences.values_list("digest", flat=True))


def fences_release(import_job_id: Any) -> None:
    """In the transaction that finishes an import: the fences handed to it are done with."""
    ErasureFence.objects.filter(import_job_id=import_job_id).delete()
