"""The `messy` command line: write, batch, import, erase and follow jobs.

    messy write USERNAME CITY STATE MESSAGE
    messy batch FILE            (a JSON array or NDJSON; "-" reads standard input)
    messy import FILE [--wait]  (a progress bar on a terminal)
    messy erase USERNAME [--wait]
    messy job ID [--wait]

The server, keys and token come from --url, --api-key, --token or MESSY_URL, MESSY_API_KEY,
MESSY_TOKEN. Answers are printed as JSON on standard output; exit status 1 when something was
refused (a rejected message, a failed job), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from . import __version__
from .client import MessyClient, MessyError


def _messages(source: TextIO) -> Iterator[dict[str, Any]]:
    """The messages of a JSON array or of NDJSON (one object a line, blank lines skipped)."""
    text = source.read()
    if text.lstrip().startswith("["):
        yield from json.loads(text)
        return
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)


class ProgressBar:
    """An upload's progress on a terminal (stderr), as "[#####.....]  42%  1.2 / 2.9 MB"."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.shown = stream.isatty()

    def __call__(self, sent: int, total: int) -> None:
        if not self.shown:
            return
        share = sent / total if total else 1.0
        filled = int(share * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {share:4.0%}  {sent / 1e6:.1f} / {total / 1e6:.1f} MB")
        if sent >= total:
            self.stream.write("\n")
        self.stream.flush()


def _job_progress(stream: TextIO) -> Any:
    def show(job: dict[str, Any]) -> None:
        if stream.isatty():
            progress = job.get("progress") or {}
            stream.write(f"\r{job['status']}: {progress.get('done', 0)} of {progress.get('total') or '?'}   ")
            stream.flush()

    return show


def _print(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def _job_outcome(client: MessyClient, job: dict[str, Any], wait: bool, timeout: float) -> int:
    if wait:
        job = client.wait_job(job["id"], timeout=timeout, on_progress=_job_progress(sys.stderr))
        if sys.stderr.isatty():
            sys.stderr.write("\n")
    _print(job)
    return 1 if job["status"] in ("failed", "cancelled") else 0


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(prog="messy", description="Write to Messy and follow its jobs.")
    main_parser.add_argument("--version", action="version", version=f"messy-client {__version__}")
    main_parser.add_argument("--url", default=os.environ.get("MESSY_URL", "http://127.0.0.1:8000"))
    main_parser.add_argument("--api-key", default=os.environ.get("MESSY_API_KEY"), help="for writes and reads")
    main_parser.add_argument("--token", default=os.environ.get("MESSY_TOKEN"), help="an API token, for jobs")
    main_parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    commands = main_parser.add_subparsers(dest="command", required=True)

    write = commands.add_parser("write", help="write one message")
    for field in ("username", "city", "state", "message"):
        write.add_argument(field)
    write.add_argument("--id", help="the message's own UUID (default: a new UUIDv7)")
    write.add_argument("--idempotency-key")

    batch = commands.add_parser("batch", help="write the messages of a JSON array or NDJSON file")
    batch.add_argument("file", type=argparse.FileType("r", encoding="utf-8"))

    upload = commands.add_parser("import", help="upload a file and start an import job")
    upload.add_argument("file")
    upload.add_argument("--format", choices=("json", "ndjson", "csv"))
    upload.add_argument("--wait", action="store_true", help="wait for the job to finish")

    erase = commands.add_parser("erase", help="start erasing every message of a user")
    erase.add_argument("username")
    erase.add_argument("--wait", action="store_true")

    job = commands.add_parser("job", help="show a job")
    job.add_argument("id")
    job.add_argument("--wait", action="store_true", help="wait until it has finished")
    for command in (upload, erase, job):
        command.add_argument("--wait-timeout", type=float, default=3600.0)
    return main_parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with MessyClient(args.url, api_key=args.api_key, token=args.token, timeout=args.timeout) as client:
        try:
            if args.command == "write":
                fields = (args.username, args.city, args.state, args.message)
                _print(client.write(*fields, id=args.id, idempotency_key=args.idempotency_key))
                return 0
            if args.command == "batch":
                with args.file as source:
                    results = client.write_many(_messages(source))
                rejected = [r for r in results if r["status"] == "rejected"]
                _print({"accepted": len(results) - len(rejected), "rejected": len(rejected), "results": results})
                return 1 if rejected else 0
            if args.command == "import":
                job = client.import_file(args.file, file_format=args.format, progress=ProgressBar(sys.stderr))
                return _job_outcome(client, job, args.wait, args.wait_timeout)
            if args.command == "erase":
                return _job_outcome(client, client.erase(args.username), args.wait, args.wait_timeout)
            return _job_outcome(client, client.job(args.id), args.wait, args.wait_timeout)
        except MessyError as exc:
            print(f"messy: {exc}", file=sys.stderr)
            return 1
        except (OSError, ValueError, TimeoutError) as exc:
            print(f"messy: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
