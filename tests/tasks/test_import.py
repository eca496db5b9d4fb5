"""Bulk import through the API: upload, S3, the job, stored messages, rollups, error report."""

import json
import uuid

import pytest
import requests
from django.core.management import call_command

from messages.models import Message
from project.storage import s3_client
from tasks import services
from tasks.models import Job
from tests.tasks.conftest import assert_rollups_exact, import_job, ndjson, rows

pytestmark = pytest.mark.django_db(transaction=True)


def upload(api, data: bytes, content_type: str = "application/x-ndjson", query: str = ""):
    return api.post(f"/tasks/import/{query}", data=data, content_type=content_type)


def run_and_report(api, response) -> tuple[Job, dict]:
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    assert services.job_run(job_id) in ("succeeded", "failed")
    job = Job.objects.get(pk=job_id)
    report = {}
    if job.result_key:
        redirect = api.get(f"/tasks/jobs/{job_id}/report/")
        assert redirect.status_code == 302
        report = requests.get(redirect["Location"], timeout=10).json()
    return job, report


def test_an_ndjson_import_stores_good_records_once_and_reports_every_bad_one(s3, api):
    lines: list = [*rows(5)]
    lines.insert(2, "{not json")
    lines.insert(4, {"username": "bob", "city": "", "state": "S1", "message": "x"})
    data = ndjson(lines) + b"\n\n" + ndjson(rows(3, "cleo"))
    response = upload(api, data)
    assert response.json()["status"] == "queued"
    job, report = run_and_report(api, response)
    assert job.status == "succeeded"
    assert job.result == {
        "file": "upload",
        "format": "ndjson",
        "records": 10,
        "valid": 8,
        "stored": 8,
        "rejected": 2,
        "skipped_erased": 0,
    }
    assert report["errors"] == [
        {"line": 3, "reason": "The line is not valid JSON."},
        {"line": 5, "reason": "city: This field is required.", "fields": {"city": ["This field is required."]}},
    ]
    assert Message.objects.filter(username="ana").count() == 5
    assert Message.objects.filter(username="cleo").count() == 3
    assert_rollups_exact()


def test_a_retried_import_stores_nothing_twice(s3, settings):
    settings.MESSY_IMPORT_BATCH_SIZE = 4
    job = import_job(ndjson(rows(10)))
    assert services.job_run(job.pk) == "succeeded"
    ids = set(Message.objects.values_list("id", flat=True))
    # The same job from scratch, as after a crash before any checkpoint: same ids, no new rows.
    Job.objects.filter(pk=job.pk).update(status="queued", checkpoint={}, finished_at=None)
    s3_client().put_object(
        Bucket=settings.S3_BUCKET, Key=services.job_s3_key(job.pk, services.UPLOAD), Body=ndjson(rows(10))
    )
    assert services.job_run(job.pk) == "succeeded"
    job.refresh_from_db()
    assert (job.result or {})["stored"] == 0 and (job.result or {})["valid"] == 10
    assert set(Message.objects.values_list("id", flat=True)) == ids
    assert_rollups_exact()


def test_a_csv_import_with_bom_crlf_and_short_rows(s3, api):
    data = '\ufeffusername,city,state,message\r\nana,Lyon,ARA,salut\r\nbob,Lyon\r\n\r\ncleo,Nice,PAC,"a, b"\r\n'
    job, report = run_and_report(api, upload(api, data.encode(), "text/csv"))
    assert (job.status, (job.result or {})["stored"], (job.result or {})["rejected"]) == ("succeeded", 2, 1)
    assert report["errors"] == [{"line": 3, "reason": "Expected 4 columns, found 2."}]
    assert Message.objects.get(username="cleo").message == "a, b"


def test_a_csv_without_the_needed_columns_fails_saying_which(s3, api):
    job, report = run_and_report(api, upload(api, b"username,city,message\nana,Lyon,hi\n", "text/csv"))
    assert job.status == "failed"
    assert "state" in job.error and "line 1" in job.error
    assert report["stopped_early"] and Message.objects.count() == 0


def test_a_json_array_import_reports_indexes_and_a_broken_tail_fails_after_storing_the_head(s3, api):
    good = rows(3)
    data = json.dumps([good[0], {"username": "x"}, good[1], good[2]]).encode()[:-1] + b', {"broken": '
    job, report = run_and_report(api, upload(api, data, "application/json"))
    assert job.status == "failed"
    assert "element 4" in job.error and "3 messages before it were stored" in job.error
    assert (job.result or {})["stored"] == 3
    assert report["errors"][0]["index"] == 1
    assert set(report["errors"][0]["fields"]) == {"city", "state", "message"}
    assert Message.objects.count() == 3
    assert_rollups_exact()


def test_a_file_that_is_not_utf8_is_reported_line_by_line(s3, api):
    data = ndjson(rows(1)) + b'{"username": "\xe9ric", "city": "a", "state": "b", "message": "c"}\n'
    job, report = run_and_report(api, upload(api, data.replace(b"\n", b"\r\n")))
    assert (job.result or {})["stored"] == 1
    assert report["errors"] == [{"line": 2, "reason": "The line is not valid UTF-8."}]


def test_a_multipart_upload_with_a_huge_line_is_imported_and_the_line_reported(s3, api, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = ndjson(rows(2)) + b'{"message": "' + b"x" * (settings.MESSY_IMPORT_MAX_RECORD_BYTES + 10) + b'"}\n'
    data += ndjson(rows(1, "zed"))
    response = api.post("/tasks/import/", {"file": SimpleUploadedFile("big.jsonl", data)})
    job, report = run_and_report(api, response)
    assert ((job.result or {})["file"], (job.result or {})["stored"]) == ("big.jsonl", 3)
    assert report["errors"][0]["line"] == 3 and "longer than" in report["errors"][0]["reason"]


def test_a_file_over_the_size_limit_is_refused_with_413_and_nothing_is_queued(s3, api, settings):
    settings.MESSY_IMPORT_MAX_BYTES = 1000
    response = upload(api, ndjson(rows(100)))
    assert response.status_code == 413
    assert response.json()["error"] == "file_too_large"
    assert Job.objects.count() == 0


def test_an_upload_is_deleted_from_s3_when_its_import_finishes(s3, api, settings):
    job, _ = run_and_report(api, upload(api, ndjson(rows(2))))
    keys = s3_client().list_objects_v2(Bucket=settings.S3_BUCKET, Prefix=services.job_s3_key(job.pk, ""))["Contents"]
    assert [item["Key"] for item in keys] == [services.job_s3_key(job.pk, services.REPORT)]


def test_an_unknown_format_is_refused(s3, api):
    response = upload(api, b"x", query="?format=xml")
    assert response.status_code == 400 and response.json()["fields"] == {"format": ["Unknown format."]}


def test_the_command_imports_a_file_with_a_progress_bar_and_writes_the_report(s3, tmp_path, capsys, settings):
    settings.MESSY_IMPORT_BATCH_SIZE = 10
    source = tmp_path / "messages.ndjson"
    source.write_bytes(ndjson([*rows(25), "not json"]))
    report = tmp_path / "errors.json"
    call_command("import_messages", str(source), "--report", str(report))
    out, err = capsys.readouterr()
    assert "25 stored, 1 rejected of 26 records." in out
    # Not a terminal: plain progress lines (tests/tasks/test_import_progress.py).
    assert any(line.startswith("import ") and ": 100% " in line for line in err.splitlines())
    assert json.loads(report.read_text())["errors"] == [{"line": 26, "reason": "The line is not valid JSON."}]
    assert Message.objects.count() == 25


def test_imported_ids_are_the_same_for_the_same_job_and_position_and_differ_otherwise():
    from tasks.importing import record_message_id

    job_id = uuid.uuid4()
    first = record_message_id(job_id, 7, 1_764_000_000_000)
    assert first == record_message_id(job_id, 7, 1_764_000_000_000)
    assert first != record_message_id(job_id, 8, 1_764_000_000_000)
    assert uuid.UUID(first).version == 7


def test_an_upload_larger_than_the_first_read_is_stored_whole(s3, api):
    data = ndjson(rows(3000))  # several times the reader's chunk and the request's read size
    job, _ = run_and_report(api, upload(api, data))
    assert (job.params["bytes"], (job.result or {})["stored"]) == (len(data), 3000)


def test_a_raw_upload_over_djangos_in_memory_body_limit_is_streamed_to_s3_whole(s3, api, settings):
    data = ndjson(rows(60_000))
    assert len(data) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = upload(api, data)
    assert response.status_code == 202
    job = Job.objects.get(pk=response.json()["id"])
    head = s3_client().head_object(Bucket=settings.S3_BUCKET, Key=job.params["key"])
    assert job.params["bytes"] == head["ContentLength"] == len(data)
