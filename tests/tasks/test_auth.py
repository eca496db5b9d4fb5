"""Who may create and read jobs: API tokens, staff sessions (with CSRF), signed page links."""

import re

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from tasks import services
from tasks.auth import page_token, token_hash
from tasks.models import ApiToken, Job
from tests.tasks.conftest import staff_user

pytestmark = pytest.mark.django_db(transaction=True)

ENDPOINTS = [
    ("post", "/tasks/import/"),
    ("post", "/tasks/erase/"),
    ("get", "/tasks/erase/"),
    ("get", "/tasks/jobs/"),
    ("get", "/tasks/jobs/{id}/"),
    ("post", "/tasks/jobs/{id}/cancel/"),
    ("get", "/tasks/jobs/{id}/report/"),
    ("get", "/tasks/{id}/"),
]


@pytest.fixture
def job() -> Job:
    return services.job_create(Job.Kind.ERASE, subject="someone", enqueue=False)


def call(client: Client, method: str, path: str, job: Job, **extra):
    return getattr(client, method)(path.format(id=job.pk), **extra)


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_jobs_endpoint_refuses_a_request_without_credentials_with_401(method, path, job):
    response = call(Client(), method, path, job)
    assert response.status_code == 401
    assert response.json()["error"] == "authentication_required"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_jobs_endpoint_refuses_a_wrong_token_with_403(method, path, job):
    response = call(Client(HTTP_AUTHORIZATION="Bearer messy_not-a-real-token"), method, path, job)
    assert response.status_code == 403
    assert response.json()["error"] == "invalid_token"


def test_a_malformed_authorization_header_is_401():
    assert Client(HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz").get("/tasks/jobs/").status_code == 401


def test_a_valid_token_is_accepted_and_its_use_noted(api, token):
    assert api.get("/tasks/jobs/").status_code == 200
    assert ApiToken.objects.get(prefix=token[:10]).last_used_at is not None


def test_a_revoked_token_is_refused_with_403(api, token):
    call_command("api_token", "revoke", ApiToken.objects.get(prefix=token[:10]).name)
    assert api.get("/tasks/jobs/").status_code == 403


def test_only_a_digest_of_a_token_is_stored(token):
    stored = ApiToken.objects.get(prefix=token[:10])
    assert stored.key_hash == token_hash(token) and token not in str(stored.__dict__)


def test_the_command_creates_a_working_token_and_lists_it(capsys):
    call_command("api_token", "create", "ci", "--scope", "read")
    raw = capsys.readouterr().out.strip()
    assert Client(HTTP_AUTHORIZATION=f"Bearer {raw}").get("/tasks/jobs/").status_code == 200
    call_command("api_token", "list")
    assert "ci\tmessy_" in capsys.readouterr().out


def test_a_staff_session_may_use_the_api_with_a_csrf_token_and_not_without(job):
    staff = staff_user("op", "admin")
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    assert client.get("/tasks/jobs/").status_code == 200
    refused = client.post(f"/tasks/jobs/{job.pk}/cancel/")
    assert (refused.status_code, refused.json()["error"]) == (403, "csrf_failed")
    client.get("/admin/")  # sets the CSRF cookie, as the admin pages would
    csrf = client.cookies["csrftoken"].value
    assert client.post(f"/tasks/jobs/{job.pk}/cancel/", HTTP_X_CSRFTOKEN=csrf).status_code == 202


def test_a_session_that_is_not_staff_is_refused_with_403():
    client = Client()
    client.force_login(User.objects.create_user("someone", password="pw"))
    response = client.get("/tasks/jobs/")
    assert (response.status_code, response.json()["error"]) == (403, "staff_required")


def test_a_page_link_reads_its_own_job_only_and_nothing_else(job):
    other = services.job_create(Job.Kind.ERASE, subject="x", enqueue=False)
    link = page_token(job.pk)
    client = Client()
    assert client.get(f"/tasks/jobs/{job.pk}/", {"t": link}).status_code == 200
    assert client.get(f"/tasks/{job.pk}/", {"t": link}).status_code == 200
    assert client.get(f"/tasks/jobs/{other.pk}/", {"t": link}).status_code == 403
    assert client.post(f"/tasks/jobs/{job.pk}/cancel/?t={link}").status_code == 401
    assert client.get("/tasks/jobs/", {"t": link}).status_code == 401


def test_an_expired_page_link_is_refused(job, settings):
    settings.MESSY_JOB_PAGE_TOKEN_MAX_AGE = -1
    assert Client().get(f"/tasks/jobs/{job.pk}/", {"t": page_token(job.pk)}).status_code == 403


def test_the_admin_lists_jobs_tokens_and_searchable_messages_and_shows_a_new_token_once(job):
    from tests.tasks.conftest import payload, store

    store([payload("findme"), payload("other")])
    admin = User.objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(admin)
    for path in ("/admin/tasks/job/", f"/admin/tasks/job/{job.pk}/change/", "/admin/tasks/apitoken/"):
        assert client.get(path).status_code == 200, path
    found = client.get("/admin/messy_messages/message/", {"q": "findme"}).content.decode()
    assert "findme" in found and "other" not in found
    response = client.post("/admin/tasks/apitoken/add/", {"name": "from-admin", "scopes": ["read"]}, follow=True)
    shown = re.search(r'<code id="raw-token">([^<]+)</code>', response.content.decode())
    assert shown, "the new token's page shows it"
    raw = shown[1]
    assert Client(HTTP_AUTHORIZATION=f"Bearer {raw}").get("/tasks/jobs/").status_code == 200
    assert raw not in client.get("/admin/tasks/apitoken/").content.decode()
    assert "someone" not in client.get(f"/admin/tasks/job/{job.pk}/change/").content.decode()


def test_jobs_are_listed_newest_first_and_filtered_by_kind_and_status(api, job):
    services.job_cancel(job)
    queued = services.job_create(Job.Kind.ERASE, subject="y", enqueue=False)
    listed = api.get("/tasks/jobs/", {"kind": "erase", "status": "queued"}).json()["jobs"]
    assert [item["id"] for item in listed] == [str(queued.pk)]
    assert [item["id"] for item in api.get("/tasks/jobs/").json()["jobs"]] == [str(queued.pk), str(job.pk)]
    assert api.get("/tasks/jobs/", {"status": "nope"}).status_code == 400
    assert api.get("/tasks/jobs/", {"kind": "import"}).json() == {"jobs": []}
    created = listed[0]["created_at"]
    # The API's one timestamp format (project.http.timestamp): ISO 8601, UTC, milliseconds, Z.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", created) and listed[0]["finished_at"] is None


def test_cancelling_a_finished_job_is_a_409(api, job):
    assert api.post(f"/tasks/jobs/{job.pk}/cancel/").status_code == 202
    response = api.post(f"/tasks/jobs/{job.pk}/cancel/")
    assert (response.status_code, response.json()["error"]) == (409, "job_finished")


def test_a_staff_session_sees_the_page_which_then_reads_the_job_with_the_session(job):
    client = Client()
    client.force_login(staff_user("op2", "read"))
    page = client.get(f"/tasks/{job.pk}/")
    assert page.status_code == 200 and page["Referrer-Policy"] == "no-referrer"
    assert f'data-api="/tasks/jobs/{job.pk}/"' in page.content.decode()


def test_a_staff_session_has_only_the_scopes_its_permissions_give(job):
    """A dashboard viewer (staff, no jobs permission) may not erase; an eraser may not import."""
    viewer, eraser = Client(), Client()
    viewer.force_login(staff_user("viewer"))
    eraser.force_login(staff_user("eraser", "erase", "read"))

    refused = viewer.post("/tasks/erase/", {"username": "someone"})
    assert (refused.status_code, refused.json()["error"]) == (403, "insufficient_scope")
    assert "tasks.scope_erase" in refused.json()["message"]
    assert viewer.get("/tasks/jobs/").status_code == 403
    assert viewer.post(f"/tasks/jobs/{job.pk}/cancel/").status_code == 403
    assert eraser.post("/tasks/erase/", {"username": "someone"}).status_code == 202
    assert eraser.post("/tasks/import/").status_code == 403
    assert eraser.get("/tasks/jobs/").status_code == 200


def test_a_group_gives_its_members_the_scopes_of_its_permissions(job):
    from django.contrib.auth.models import Group, Permission

    operators = Group.objects.create(name="operators")
    operators.permissions.add(Permission.objects.get(codename="scope_admin"))
    user = staff_user("member")
    user.groups.add(operators)
    client = Client()
    client.force_login(user)

    assert client.post(f"/tasks/jobs/{job.pk}/cancel/").status_code == 202


def test_the_admin_deletes_only_finished_jobs(job):
    finished = services.job_create(Job.Kind.ERASE, subject="gone", enqueue=False)
    Job.objects.filter(pk=finished.pk).update(status=Job.Status.SUCCEEDED)
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw"))

    assert client.get(f"/admin/tasks/job/{job.pk}/delete/").status_code == 403
    client.post(f"/admin/tasks/job/{job.pk}/delete/", {"post": "yes"})
    both = {"action": "delete_selected", "_selected_action": [job.pk, finished.pk], "post": "yes"}
    assert client.post("/admin/tasks/job/", both).status_code == 403
    assert Job.objects.filter(pk=finished.pk).exists()
    client.post("/admin/tasks/job/", {**both, "_selected_action": [finished.pk]})

    assert Job.objects.filter(pk=job.pk).exists(), "an unfinished job (an erasure's fence) stays"
    assert not Job.objects.filter(pk=finished.pk).exists()
