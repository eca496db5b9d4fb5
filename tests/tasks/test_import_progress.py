"""import_messages' progress: tqdm's bar with rate and ETA on a terminal, plain lines elsewhere."""

import io
import re

import pytest
from django.core.management import call_command

from tasks.management.commands.import_messages import ImportProgress
from tasks.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def job_at(done: int, total: int = 4 * 1024 * 1024, message: str = "") -> Job:
    return Job(kind=Job.Kind.IMPORT, progress_done=done, progress_total=total, progress_message=message)


def test_off_a_terminal_it_writes_plain_lines_with_rate_and_eta():
    out = io.StringIO()
    job = job_at(0)
    progress = ImportProgress(out, job, line_seconds=0)
    progress.update(job_at(1024 * 1024, message="10 records read: 10 stored, 0 rejected."))
    progress.update(job_at(1024 * 1024, message="10 records read: 10 stored, 0 rejected."))  # nothing new
    progress.close(job_at(4 * 1024 * 1024, message="40 records read: 39 stored, 1 rejected."))

    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 2
    first, last = lines
    assert re.fullmatch(
        r"import \S+:  25% 1\.00M/4\.00M \[\d\d:\d\d<(\d\d:\d\d|\?), [\d.]+\w?B/s, "
        r"10 records read: 10 stored, 0 rejected\.\]",
        first,
    ), first
    assert re.match(r"import \S+: 100% 4\.00M/4\.00M \[", last), last
    assert last.endswith(", 40 records read: 39 stored, 1 rejected.]")


def test_off_a_terminal_lines_come_at_most_once_per_interval_and_always_at_the_end():
    out = io.StringIO()
    progress = ImportProgress(out, job_at(0), line_seconds=3600)
    for done in range(1, 50):
        progress.update(job_at(done * 1024))
    progress.close(job_at(4 * 1024 * 1024))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert " 100% " in lines[-1]


def test_on_a_terminal_it_draws_tqdms_bar_with_rate_and_eta():
    terminal = Terminal()
    progress = ImportProgress(terminal, job_at(0), line_seconds=0)
    progress.update(job_at(2 * 1024 * 1024, message="20 records read"))
    progress.close(job_at(4 * 1024 * 1024, message="40 records read"))
    drawn = terminal.getvalue()
    assert "\r" in drawn
    assert "100%|" in drawn and "4.00M/4.00M" in drawn
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, [\d.]+\w?B/s, 40 records read\]", drawn), drawn


def test_the_command_off_a_terminal_ends_with_a_complete_line(s3, tmp_path, settings):
    settings.MESSY_IMPORT_BATCH_SIZE = 10
    source = tmp_path / "messages.ndjson"
    source.write_text(
        "".join(f'{{"username": "u{i}", "city": "c", "state": "s", "message": "m"}}\n' for i in range(30))
    )
    out, err = io.StringIO(), io.StringIO()
    call_command("import_messages", str(source), stdout=out, stderr=err)
    assert "30 stored, 0 rejected of 30 records." in out.getvalue()
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("job ")
    assert re.fullmatch(r"import \S+: 100% \S+/\S+ \[.*, 30 records read: 30 stored, 0 rejected\.\]", lines[-1]), lines
    assert "\r" not in err.getvalue()
