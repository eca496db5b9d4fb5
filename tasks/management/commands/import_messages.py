import time
from pathlib import Path
from typing import Any, TextIO, cast

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from project.storage import s3_client
from tasks import services
from tasks.importing import UploadTooLarge, import_job_create
from tasks.models import Job
from tasks.records import FORMATS


class ImportProgress:
    """The job's progress on stderr: tqdm's bar (bytes read, rate, ETA and the job's counts) on
    a terminal; elsewhere (a log file, CI, cron) the same figures as plain lines, one every
    `line_seconds` and one at the end, so the output reads well where a bar's carriage
    returns would not."""

    # Plain lines carry the bar's figures without the bar.
    LINE_FORMAT = "{percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"

    def __init__(self, stream: TextIO, job: Job, line_seconds: float = 10.0) -> None:
        self.stream = stream
        self.line_seconds = line_seconds
        # disable=None: no bar when the stream is not a terminal.
        self.bar = tqdm(
            total=job.progress_total,
            initial=job.progress_done,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=stream,
            disable=None,
            desc=f"import {job.pk}",
            dynamic_ncols=True,
        )
        self.initial = job.progress_done
        self.started = time.monotonic()
        self.last_line = -line_seconds
        self.last_shown: tuple[int, str] | None = None

    def update(self, job: Job) -> None:
        if not self.bar.disable:
            self.bar.total = job.progress_total
            self.bar.update(job.progress_done - self.bar.n)
            self.bar.set_postfix_str(job.progress_message, refresh=True)
            return
        now = time.monotonic()
        if self._changed(job) and now - self.last_line >= self.line_seconds:
            self._line(job, now)

    def close(self, job: Job) -> None:
        if self.bar.disable:
            if self._changed(job):
                self._line(job, time.monotonic())
        else:
            self.update(job)
        self.bar.close()

    def _changed(self, job: Job) -> bool:
        return self.last_shown != (job.progress_done, job.progress_message)

    def _line(self, job: Job, now: float) -> None:
        self.last_line, self.last_shown = now, (job.progress_done, job.progress_message)
        line = tqdm.format_meter(
            n=job.progress_done,
            total=job.progress_total,
            elapsed=now - self.started,
            initial=self.initial,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            postfix=job.progress_message,
            bar_format=self.LINE_FORMAT,
        )
        self.stream.write(f"import {job.pk}: {line}\n")
        self.stream.flush()


class Command(BaseCommand):
    help = (
        "Import messages from a JSON array, NDJSON or CSV file: the same job as POST /tasks/import/ "
        "(stored in S3, validated, stored once, error report), run in this process with a progress bar."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--format", choices=FORMATS, default="", help="default: guessed from the content")
        parser.add_argument("--report", type=Path, help="also write the error report to this file")

    def handle(self, *args: Any, file: Path, format: str, report: Path | None, **options: Any) -> None:
        if not file.is_file():
            raise CommandError(f"{file} is not a file.")
        with file.open("rb") as stream:
            try:
                job = import_job_create(stream, name=file.name, file_format=format, enqueue=False)
            except UploadTooLarge:
                raise CommandError(f"{file} is larger than MESSY_IMPORT_MAX_BYTES.") from None
        self.stderr.write(f"job {job.pk}")
        # The stream itself: Django's wrapper would end each of the bar's redraws with a newline.
        progress = ImportProgress(cast(TextIO, self.stderr._out), job)
        # Run here; if the run hands over or another process holds the job, watch it finish.
        while not job.is_finished:
            if services.job_run(job.pk, on_progress=progress.update) == "skipped":
                time.sleep(0.5)
            job.refresh_from_db()
            progress.update(job)
        progress.close(job)
        if job.result_key and report:
            body = s3_client().get_object(Bucket=settings.S3_BUCKET, Key=job.result_key)["Body"]
            report.write_bytes(body.read())
            self.stderr.write(f"error report written to {report}")
        if job.status != Job.Status.SUCCEEDED:
            raise CommandError(f"The import {job.status}: {job.error}")
        result = job.result or {}
        self.stdout.write(
            f"{result.get('stored', 0):,} stored, {result.get('rejected', 0):,} rejected "
            f"of {result.get('records', 0):,} records."
        )
