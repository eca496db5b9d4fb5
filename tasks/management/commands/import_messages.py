import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from project.storage import s3_client
from tasks import services
from tasks.importing import UploadTooLarge, import_job_create
from tasks.models import Job
from tasks.records import FORMATS

BAR_WIDTH = 30


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
        # Run here; if the run hands over or another process holds the job, watch it finish.
        while not job.is_finished:
            if services.job_run(job.pk, on_progress=self._bar) == "skipped":
                time.sleep(0.5)
            job.refresh_from_db()
            self._bar(job)
        sys.stderr.write("\n")
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

    def _bar(self, job: Job) -> None:
        fraction = min(1.0, job.progress_done / job.progress_total) if job.progress_total else 0.0
        filled = int(fraction * BAR_WIDTH)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%} {job.progress_message}")
        sys.stderr.flush()
