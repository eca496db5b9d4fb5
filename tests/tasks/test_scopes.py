"""Scoped, expiring API tokens (issue 9, item 4): every scope on every jobs endpoint, expiry,
jobs seen only by the token that created them, the api_token command and the admin."""

import importlib
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from tasks import auth, services
from tasks.models import ApiToken, Job
from tests.tasks.conftest import ndjson, rows, staff_user

pytestmark = pytest.mark.django_db(transaction=True)

SCOPES = ["import", "erase", "read", "admin"]
# (method, path, the kind of the job it acts on, the scope it takes, the answer when allowed)
ENDPOINTS = [
    ("post", "/tasks/import/", None, "import", 202),
    ("post", "/tasks/erase/", None, "erase", 202),
    ("get", "/tasks/erase/", None, "erase", 200),
    ("get", "/tasks/jobs/", None, "read", 200),
    ("get", "/tasks/jobs/{id}/", "import", "read", 200),
    ("get", "/tasks/jobs/{id}/report/", "import", "read", 302),
    ("get", "/tasks/{id}/", "import", "read", 200),
    ("post", "/tasks/jobs/{id}/cancel/", "import", "import", 202),
    ("post", "/tasks/jobs/{id}/cancel/", "erase", "erase", 202),
]


def token_client(*scopes: str, expires_at: Any = None) -> tuple[ApiToken, Client]:
    token, raw = auth.api_token_create(f"t-{len(scopes)}-{timezone.now().timestamp()}", scopes, expires_at)
    return token, Client(HTTP_AUTHORIZATION=f"Bearer {raw}")


def job_of(kind: str, token: ApiToken | None) -> Job:
    """A queued job created by `token`, with a report (so its report link has somewhere to go)."""
    job = services.job_create(kind, subject="someone" if kind == "erase" else "", token=token, enqueue=False)
    Job.objects.filter(pk=job.pk).update(result_key=services.job_s3_key(job.pk, services.REPORT))
    return job


def call(client: Client, method: str, path: str, job: Job | None) -> Any:
    url = path.format(id=job.pk if job else "")
    if url == "/tasks/import/":
        return client.post(url, data=ndjson(rows(2)), content_type="application/x-ndjson")
    if (method, url) == ("post", "/tasks/erase/"):
        return client.post(url, data=json.dumps({"username": "ada"}), content_type="application/json")
    return getattr(client, method)(url)


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize(("method", "path", "kind", "needed", "allowed"), ENDPOINTS)
def test_each_endpoint_takes_its_scope_and_admin_has_them_all(s3, scope, method, path, kind, needed, allowed):
    token, client = token_client(scope)
    response = call(client, method, path, job_of(kind, token) if kind else None)
    if scope in (needed, "admin"):
        assert response.status_code == allowed, response.content
        return
    assert (response.status_code, response.json()["error"]) == (403, "insufficient_scope")
    challenge = response["WWW-Authenticate"]
    assert challenge == f'Bearer realm="messy", error="insufficient_scope", scope="{needed}"'


def test_scopes_add_up_and_a_token_lacking_one_gets_403_for_that_one_only(s3):
    token, client = token_client("import", "read")
    created = call(client, "post", "/tasks/import/", None)
    assert created.status_code == 202
    assert client.get(f"/tasks/jobs/{created.json()['id']}/").status_code == 200
    assert call(client, "post", "/tasks/erase/", None).status_code == 403
    assert ApiToken.objects.get(pk=token.pk).scopes == ["import", "read"]


@pytest.mark.parametrize(("method", "path", "kind", "needed", "allowed"), ENDPOINTS)
def test_an_expired_token_is_refused_everywhere_with_403_token_expired(s3, method, path, kind, needed, allowed):
    token, client = token_client("admin", expires_at=timezone.now() - timedelta(seconds=1))
    response = call(client, method, path, job_of(kind, token) if kind else None)
    assert (response.status_code, response.json()["error"]) == (403, "token_expired")
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_a_token_works_until_it_expires(s3):
    token, client = token_client("read", expires_at=timezone.now() + timedelta(hours=1))
    assert client.get("/tasks/jobs/").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now())
    assert client.get("/tasks/jobs/").status_code == 403


def test_without_admin_a_token_lists_reads_and_cancels_only_its_own_jobs(s3):
    mine_token, mine = token_client("import", "erase", "read")
    other_token, _ = token_client("import", "erase", "read")
    own = job_of("import", mine_token)
    others = [job_of("import", other_token), job_of("erase", other_token), job_of("erase", None)]
    assert [job["id"] for job in mine.get("/tasks/jobs/").json()["jobs"]] == [str(own.pk)]
    assert mine.get("/tasks/jobs/", {"kind": "erase"}).json() == {"jobs": []}
    for job in others:
        for method, path in [
            ("get", f"/tasks/jobs/{job.pk}/"),
            ("get", f"/tasks/jobs/{job.pk}/report/"),
            ("get", f"/tasks/{job.pk}/"),
            ("post", f"/tasks/jobs/{job.pk}/cancel/"),
        ]:
            response = getattr(mine, method)(path)
            # The same answer as for a job that does not exist: nothing tells that it does.
            assert (response.status_code, response.json()["error"]) == (404, "job_not_found"), path
        assert Job.objects.get(pk=job.pk).status == "queued"
    assert mine.post(f"/tasks/jobs/{own.pk}/cancel/").status_code == 202


def test_another_tokens_job_is_404_even_to_a_token_lacking_the_scope_to_cancel_it(s3):
    reader_token, reader = token_client("read")
    other_token, _ = token_client("import")
    # Its own import: 403 (it may see the job, but not cancel an import) ...
    assert reader.post(f"/tasks/jobs/{job_of('import', reader_token).pk}/cancel/").status_code == 403
    # ... someone else's: 404, before the scope is looked at.
    assert reader.post(f"/tasks/jobs/{job_of('import', other_token).pk}/cancel/").status_code == 404


def test_an_admin_token_and_a_staff_session_see_and_cancel_every_job(s3):
    other_token, _ = token_client("import", "read")
    jobs = [job_of("import", other_token), job_of("erase", None)]
    _, admin = token_client("admin")
    staff = Client()
    staff.force_login(staff_user("op", "admin"))
    for client in (admin, staff):
        assert {job["id"] for job in client.get("/tasks/jobs/").json()["jobs"]} == {str(job.pk) for job in jobs}
        for job in jobs:
            assert client.get(f"/tasks/jobs/{job.pk}/").status_code == 200
            assert client.get(f"/tasks/{job.pk}/").status_code == 200
    for job in jobs:
        assert admin.post(f"/tasks/jobs/{job.pk}/cancel/").status_code == 202


def test_the_page_offers_cancelling_only_to_a_token_with_the_jobs_scope(s3):
    token, reader = token_client("read", "erase")
    imported, erasure = job_of("import", token), job_of("erase", token)
    assert b"data-cancel=" not in reader.get(f"/tasks/{imported.pk}/").content
    assert f'data-cancel="/tasks/jobs/{erasure.pk}/cancel/"'.encode() in reader.get(f"/tasks/{erasure.pk}/").content


def test_the_command_creates_a_token_with_the_scopes_and_expiry_named(capsys):
    call_command("api_token", "create", "ci", "--scope", "import", "--scope", "read", "--expires-in-days", "90")
    raw = capsys.readouterr().out.strip()
    token = ApiToken.objects.get(name="ci")
    assert token.scopes == ["import", "read"] and token.key_hash == auth.token_hash(raw)
    assert token.expires_at is not None
    assert abs(token.expires_at - timezone.now() - timedelta(days=90)) < timedelta(minutes=1)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/tasks/jobs/").status_code == 200
    assert client.get("/tasks/erase/").status_code == 403
    call_command("api_token", "create", "forever", "--scope", "erase")
    assert ApiToken.objects.get(name="forever").expires_at is None
    ApiToken.objects.filter(name="ci").update(expires_at=timezone.now() - timedelta(days=1))
    capsys.readouterr()
    call_command("api_token", "list")
    listed = dict(line.split("\t", 1) for line in capsys.readouterr().out.splitlines())
    assert "\texpired\timport,read\texpires " in listed["ci"]
    assert "\tactive\terase\tno expiry\t" in listed["forever"]


@pytest.mark.parametrize(
    "arguments",
    [
        ["create", "noscope"],
        ["create", "badscope", "--scope", "everything"],
        ["create", "past", "--scope", "read", "--expires-in-days", "0"],
    ],
)
def test_the_command_refuses_a_token_without_scopes_with_an_unknown_one_or_a_past_expiry(arguments):
    with pytest.raises(CommandError):
        call_command("api_token", *arguments)
    assert not ApiToken.objects.exists()


def test_a_token_cannot_be_created_without_a_scope_or_with_an_unknown_one():
    for scopes in ([], ["read", "write"]):
        with pytest.raises(ValueError, match="Name one or more scopes"):
            auth.api_token_create("x", scopes)
    assert not ApiToken.objects.exists()


def test_the_admin_creates_a_token_with_scopes_and_expiry_and_edits_them():
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw"))
    refused = client.post("/admin/tasks/apitoken/add/", {"name": "no-scopes"})
    assert refused.status_code == 200 and not ApiToken.objects.exists()
    response = client.post(
        "/admin/tasks/apitoken/add/",
        {"name": "ops", "scopes": ["erase", "read"], "expires_at_0": "2099-01-01", "expires_at_1": "00:00:00"},
        follow=True,
    )
    assert "no-store" in response["Cache-Control"]
    shown = re.search(r'<code id="raw-token">([^<]+)</code>', response.content.decode())
    assert shown, "the new token's page shows it"
    raw = shown[1]
    assert raw not in str(response.cookies), "the raw token never goes into a cookie"
    assert not list(response.context["messages"])
    token = ApiToken.objects.get(name="ops")
    assert token.scopes == ["erase", "read"] and token.expires_at and token.expires_at.year == 2099
    api = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/tasks/erase/").status_code == 200
    listing = client.get("/admin/tasks/apitoken/").content.decode()
    assert "ops" in listing and "2099" in listing
    edited = client.post(
        f"/admin/tasks/apitoken/{token.pk}/change/", {"name": "ops", "scopes": ["read"], "is_active": "on"}
    )
    assert edited.status_code == 302
    assert ApiToken.objects.get(pk=token.pk).scopes == ["read"]
    assert api.get("/tasks/erase/").status_code == 403


def test_upgrading_gives_every_existing_token_every_scope_so_nobody_is_locked_out():
    token, _ = auth.api_token_create("old", ["read"])
    migration = importlib.import_module("tasks.migrations.0005_token_scopes_expiry")
    migration.existing_tokens_keep_every_scope(apps, None)
    assert ApiToken.objects.get(pk=token.pk).scopes == ["import", "erase", "read", "admin"]
