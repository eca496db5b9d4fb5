"""Tracked background jobs, the API tokens that may create them, and the erasure tally.

A job row is the single source of truth about a job: Celery messages carry only its id, so a
lost, duplicated or redelivered message changes nothing that the row does not allow.
"""

import uuid
from datetime import datetime

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone


class TokenScope(models.TextChoices):
    IMPORT = "import", "import: create imports, cancel its own"
    ERASE = "erase", "erase: create erasures, cancel its own, read the erasure count"
    READ = "read", "read: list and read its own jobs"
    ADMIN = "admin", "admin: everything, on every job"


class ApiToken(models.Model):
    """A credential for the jobs API. Only a SHA-256 digest of the token is stored: the token
    has 256 random bits, so a slow password hash would add nothing but latency.

    A token may do what its scopes name (tasks/auth.py), until it expires. `admin` includes
    every other scope and every job; without it a token sees and cancels only the jobs it
    created. A staff session has the scopes of its permissions below (tasks.scope_<scope>).
    """

    Scope = TokenScope

    name = models.CharField(max_length=100, unique=True, help_text="Who or what uses this token.")
    prefix = models.CharField(max_length=16, help_text="The token's first characters, to tell tokens apart.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = ArrayField(models.CharField(max_length=16, choices=TokenScope.choices), default=list)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Refused from then on; empty: never.")
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        db_table = "tasks_api_token"
        verbose_name = "API token"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(scopes__contained_by=TokenScope.values) & models.Q(scopes__len__gt=0),
                name="tasks_api_token_known_scopes",
            )
        ]
        # A staff session's scopes in the jobs API, given to a user or a group in the admin.
        permissions = [(f"scope_{value}", f"Jobs API scope {label}") for value, label in TokenScope.choices]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes or TokenScope.ADMIN in self.scopes

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class Job(models.Model):
    class Kind(models.TextChoices):
        IMPORT = "import", "Import messages"
        ERASE = "erase", "Erase a user's messages"
        RETAIN = "retain", "Delete messages past retention"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    # Random, so a job's id reveals nothing and cannot be guessed.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress_done = models.BigIntegerField(default=0)
    progress_total = models.BigIntegerField(null=True, blank=True)
    progress_unit = models.CharField(max_length=16, blank=True, help_text="What done and total count.")
    progress_message = models.TextField(blank=True)
    error = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True)
    result_key = models.TextField(blank=True, help_text="S3 key of a result too large for the row (an error report).")
    # The kind's input, never identifying anyone (an import's file key, format and name).
    params = models.JSONField(default=dict, blank=True)
    # An erasure's username: needed to resume after a worker died, so kept while the job is
    # unfinished, and wiped by the same UPDATE that finishes the job.
    subject = models.TextField(blank=True)
    # Where a resumed run starts, written in the same transaction as the work it describes.
    checkpoint = models.JSONField(default=dict, blank=True)
    cancel_requested = models.BooleanField(default=False)
    owner = models.CharField(max_length=200, blank=True, help_text="The worker process holding the job.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_token = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        db_table = "tasks_job"
        indexes = [
            models.Index(fields=["-created_at"], name="tasks_job_newest"),
            models.Index(fields=["kind", "status", "-created_at"], name="tasks_job_kind_status"),
            # Recovery looks for unfinished jobs by heartbeat, pruning for old finished ones.
            models.Index(fields=["status", "heartbeat_at"], name="tasks_job_status_heartbeat"),
            models.Index(fields=["finished_at"], name="tasks_job_finished"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class RejectedRecord(models.Model):
    """A bad record of an unfinished import. Written in the transaction that stores the good
    records of the same batch, so a retried batch reports each bad record once; gathered into
    the S3 error report (and deleted) when the import finishes."""

    # Indexed by (job, position) below, which also serves lookups by job alone.
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="+", db_index=False)
    position = models.BigIntegerField(help_text="Line number (NDJSON, CSV) or array index (JSON).")
    reason = models.TextField()
    fields = models.JSONField(null=True, blank=True)

    class Meta:
        db_table = "tasks_rejected_record"
        indexes = [models.Index(fields=["job", "position"], name="tasks_rejected_job_position")]

    def __str__(self) -> str:
        return f"{self.position}: {self.reason}"


class ErasureTally(models.Model):
    """The single row (id=1) counting erasures performed: the only trace an erasure leaves."""

    id = models.SmallIntegerField(primary_key=True, default=1)
    erasures = models.BigIntegerField(default=0)

    class Meta:
        db_table = "tasks_erasure_tally"
        verbose_name_plural = "erasure tally"

    def __str__(self) -> str:
        return f"{self.erasures} erasures performed"


class ErasureFence(models.Model):
    """Keeps imports from bringing back an erased user's messages (tasks/fence.py). Holds a
    keyed digest of the username, never the name.

    A row with `erasure` set exists while that erasure runs: every import skips the digest. When
    the erasure finishes, it is replaced by one row per import then unfinished (`import_job`
    set): those imports, created before the erasure reported success, keep skipping it; imports
    created afterwards do not. A row goes with its job.
    """

    digest = models.CharField(max_length=64)
    erasure = models.ForeignKey(Job, null=True, on_delete=models.CASCADE, related_name="+")
    import_job = models.ForeignKey(Job, null=True, on_delete=models.CASCADE, related_name="+")

    class Meta:
        db_table = "tasks_erasure_fence"

    def __str__(self) -> str:
        return f"fence {self.digest[:8]}…"
