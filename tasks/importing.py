"""Bulk import: an uploaded file goes to S3, then a job reads it as a stream and stores its good
records through messages_persist. Exactly once, however often it is retried or resumed: ids come
from the job and the record's position, and each batch commits with its checkpoint.

# Documented in docs/jobs.md ("Import").
"""

import functools
import json
import logging
import uuid
from collections.abc import Iterator
from typing import IO, Any

from django.conf import settings
from django.db import transaction
from django.utils.crypto import salted_hmac

from messages.ids import message_id_from
from messages.services import messages_persist
from messages.staged import StagedPayload, staged_payload
from messages.validation import message_validate
from project.storage import bucket_prepare, s3_client
from tasks.fence import erased_digests, fence_lock_shared, fences_release, username_digest
from tasks.kinds import JobFailed, JobKind, JobRun, Outcome, job_kinds
from tasks.models import ApiToken, Job, RejectedRecord
from tasks.records import FORMATS, FileUnreadable, Record, format_sniff, records_read
from tasks.services import REPORT, UPLOAD, job_create, job_s3_key

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
SKIP_HEARTBEAT_EVERY = 50_000


class UploadTooLarge(Exception):
    pass


class _LimitedReader:
    """A read()-able view of a stream that counts bytes and refuses more than `limit`, so an
    upload without (or with a false) Content-Length is still bounded."""

    def __init__(self, head: bytes, stream: IO[bytes], limit: int) -> None:
        self._head = head
        self._stream = stream
        self._limit = limit
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        """Exactly `size` bytes unless the stream ends: S3 uploads take a short read for the end,
        while request streams may return less than asked at any time."""
        wanted = size if size and size > 0 else self._limit + 1
        parts, got = [], 0
        if self._head:
            parts.append(self._head[:wanted])
            self._head = self._head[wanted:]
            got = len(parts[0])
        while got < wanted:
            data = self._stream.read(min(wanted - got, 1024 * 1024))
            if not data:
                break
            parts.append(data)
            got += len(data)
        self.size += got
        if self.size > self._limit:
            raise UploadTooLarge()
        return b"".join(parts)


def import_job_create(
    stream: IO[bytes],
    *,
    name: str,
    file_format: str = "",
    created_by: Any = None,
    token: ApiToken | None = None,
    enqueue: bool = True,
) -> Job:
    """Store the upload in S3 and queue the job that imports it. The format is the one given,
    else guessed from the first bytes. Raises UploadTooLarge past MESSY_IMPORT_MAX_BYTES."""
    head = stream.read(CHUNK_BYTES)
    file_format = file_format or format_sniff(head)
    assert file_format in FORMATS
    job_id = uuid.uuid4()
    key = job_s3_key(job_id, UPLOAD)
    reader = _LimitedReader(head, stream, settings.MESSY_IMPORT_MAX_BYTES)
    bucket_prepare()
    s3_client().upload_fileobj(reader, settings.S3_BUCKET, key)
    with transaction.atomic():
        # An erasure finishing meanwhile waits for this job, so that it fences the job off.
        fence_lock_shared()
        return job_create(
            Job.Kind.IMPORT,
            job_id=job_id,
            params={"key": key, "format": file_format, "name": name[:200], "bytes": reader.size},
            progress_total=reader.size,
            progress_unit="bytes",
            created_by=created_by,
            token=token,
            enqueue=enqueue,
        )


class _CountingChunks:
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.bytes = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.bytes += len(chunk)
            yield chunk


_RECORD_ID_SALT = "tasks.importing.record_message_id"


def record_message_id(job_id: uuid.UUID, position: int, unix_ms: int) -> str:
    """The same id every time the job reads this record: a UUIDv7 layout (the upload's
    millisecond, then an HMAC of job and position keyed by SECRET_KEY, so that whoever holds the
    job's link cannot compute the ids). docs/jobs.md ("Import")."""
    mac = salted_hmac(_RECORD_ID_SALT, job_id.bytes + position.to_bytes(8, "big"), algorithm="sha256")
    return message_id_from(unix_ms, mac.digest())


def _reason(errors: dict[str, list[str]]) -> str:
    return "; ".join(
        f"{name}: {' '.join(messages)}" if name != "__all__" else " ".join(messages)
        for name, messages in errors.items()
    )


class _Batch:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.accepted_at = int(job.created_at.timestamp() * 1000)
        self.good: list[StagedPayload] = []
        self.bad: list[RejectedRecord] = []
        self.rejected = 0
        self.records = 0

    def add(self, record: Record, reported_so_far: int) -> None:
        self.records += 1
        reason, fields = record.error, None
        if reason is None:
            clean, errors = message_validate(record.data, history=True)
            if clean is None:
                reason, fields = _reason(errors), errors
            else:
                message_id = record_message_id(self.job.pk, record.position, self.accepted_at)
                # A record with its own sent_at counts at that time (the rollups' minute), so
                # imported history does not land in the job's minute.
                accepted_at = self.accepted_at if clean.sent_at is None else clean.sent_at
                self.good.append(staged_payload(message_id, clean, accepted_at))
                return
        self.rejected += 1
        if reported_so_far + len(self.bad) < settings.MESSY_IMPORT_MAX_REPORTED_ERRORS:
            self.bad.append(RejectedRecord(job=self.job, position=record.position, reason=reason, fields=fields))


def _progress_message(state: dict[str, Any]) -> str:
    return f"{state['records']:,} records read: {state['stored']:,} stored, {state['rejected']:,} rejected."


def _batch_commit(run: JobRun, state: dict[str, Any], batch: _Batch, done_bytes: int) -> dict[str, Any]:
    """Store a batch, its rejections and the checkpoint that counts them, all or nothing. The
    records of users an erasure fenced off are skipped (tasks.fence), in this transaction."""
    with transaction.atomic():
        erased = erased_digests(run.job.pk)
        good = (
            [item for item in batch.good if username_digest(item["username"]) not in erased] if erased else batch.good
        )
        stored = messages_persist(good)
        RejectedRecord.objects.bulk_create(batch.bad)
        state = {
            **state,
            "records": state["records"] + batch.records,
            "valid": state["valid"] + len(batch.good),
            "stored": state["stored"] + stored,
            "rejected": state["rejected"] + batch.rejected,
            "skipped_erased": state["skipped_erased"] + len(batch.good) - len(good),
        }
        run.checkpoint(done=done_bytes, message=_progress_message(state), state=state)
    return state


def import_run(run: JobRun) -> Outcome:
    job = run.job
    file_format = job.params["format"]
    state: dict[str, Any] = {
        "records": 0,
        "valid": 0,
        "stored": 0,
        "rejected": 0,
        "skipped_erased": 0,
        **job.checkpoint,
    }
    body = s3_client().get_object(Bucket=settings.S3_BUCKET, Key=job.params["key"])["Body"]
    chunks = _CountingChunks(body.iter_chunks(CHUNK_BYTES))
    skip = state["records"]
    batch = _Batch(job)
    try:
        for number, record in enumerate(records_read(chunks, file_format, settings.MESSY_IMPORT_MAX_RECORD_BYTES)):
            if number < skip:
                if number % SKIP_HEARTBEAT_EVERY == 0:
                    run.heartbeat()  # re-reading a long prefix must not look like a dead worker
                continue
            batch.add(record, state["rejected"])
            if batch.records >= settings.MESSY_IMPORT_BATCH_SIZE:
                state = _batch_commit(run, state, batch, chunks.bytes)
                batch = _Batch(job)
                run.pause_point()
    except FileUnreadable as exc:
        state = _batch_commit(run, state, batch, chunks.bytes)
        where = "element" if file_format == "json" else "line"
        key = _report_write(job, state, stopped=f"{exc.reason} ({where} {exc.position})")
        raise JobFailed(
            f"{exc.reason} ({where} {exc.position}). {state['stored']:,} messages before it were stored.",
            result=_result(job, state),
            result_key=key,
        ) from None
    finally:
        body.close()
    state = _batch_commit(run, state, batch, job.params["bytes"])
    return Outcome(_result(job, state), _report_write(job, state))


def _result(job: Job, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "file": job.params["name"],
        "format": job.params["format"],
        "records": state["records"],
        "valid": state["valid"],
        "stored": state["stored"],
        "rejected": state["rejected"],
        "skipped_erased": state["skipped_erased"],
    }


def _report_write(job: Job, state: dict[str, Any], stopped: str = "") -> str:
    """The downloadable error report: every rejected record's position and reason (never its
    content, so a report holds nothing about anyone), as one JSON object in S3."""
    where = "index" if job.params["format"] == "json" else "line"
    rejected = RejectedRecord.objects.filter(job=job).order_by("position").values_list("position", "reason", "fields")
    report = {
        "job": str(job.pk),
        **_result(job, state),
        "listed": min(state["rejected"], settings.MESSY_IMPORT_MAX_REPORTED_ERRORS),
        "stopped_early": stopped or None,
        "errors": [
            {where: position, "reason": reason, **({"fields": fields} if fields else {})}
            for position, reason, fields in rejected.iterator(chunk_size=5000)
        ],
    }
    key = job_s3_key(job.pk, REPORT)
    s3_client().put_object(
        Bucket=settings.S3_BUCKET,
        Key=key,
        Body=json.dumps(report, ensure_ascii=False, indent=1).encode("utf-8"),
        ContentType="application/json",
        ContentDisposition=f'attachment; filename="import-{job.pk}-errors.json"',
    )
    return key


def _upload_delete(job_id: uuid.UUID | str) -> None:
    """An import's uploaded file holds people's messages: it goes as soon as the job is done."""
    try:
        s3_client().delete_object(Bucket=settings.S3_BUCKET, Key=job_s3_key(job_id, UPLOAD))
    except Exception:
        logger.warning("could not delete the upload of job %s; pruning will", job_id, exc_info=True)


class ImportKind(JobKind):
    scope = ApiToken.Scope.IMPORT

    def run(self, run: JobRun) -> Outcome:
        return import_run(run)

    def on_finish(self, job_id: Any) -> None:
        """The rejected records are in the report by now, the erasures' fences are done with;
        the upload goes once this commits."""
        RejectedRecord.objects.filter(job_id=job_id).delete()
        fences_release(job_id)
        transaction.on_commit(functools.partial(_upload_delete, job_id))


job_kinds.register(Job.Kind.IMPORT, ImportKind())
