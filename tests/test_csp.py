"""The Content-Security-Policy of the HTML pages (project/csp.py): the dashboard, the job page,
the admin and the API docs send it; it lets the dashboard read the stats blob from S3; no
inline script runs without its hash; and the dashboard still draws under it in Chromium."""

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from project import csp, storage
from stats.services import publish
from tasks import services
from tasks.auth import page_token
from tasks.models import Job
from tests.browser import Tab
from tests.stats.conftest import s3_clients_reset

PAGES = [
    "/stat/",
    "/tasks/{job}/",
    "/api/docs/",
    "/admin/",
    "/admin/tasks/job/",
    "/admin/tasks/job/{job}/change/",
    "/admin/django_celery_beat/periodictask/",
    "/admin/django_celery_beat/periodictask/add/",
]
# <script> elements that are data, not code: a CSP does not apply to them.
DATA_SCRIPT_TYPES = {"application/json", "application/ld+json"}


def directives(header: str) -> dict[str, list[str]]:
    parsed = {}
    for directive in header.split(";"):
        name, *sources = directive.split()
        parsed[name] = sources
    return parsed


def inline_scripts(html: str) -> list[tuple[str, str]]:
    """(attributes, text) of every <script> with no src that a browser would run."""
    found = []
    for attributes, text in re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.DOTALL | re.IGNORECASE):
        kind = re.search(r'\btype="([^"]*)"', attributes)
        if re.search(r"\bsrc=", attributes) or (kind and kind.group(1) in DATA_SCRIPT_TYPES):
            continue
        found.append((attributes, text))
    return found


@pytest.fixture
def job() -> Job:
    return services.job_create(Job.Kind.ERASE, subject="x", enqueue=False)


@pytest.fixture
def staff(django_user_model) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("csp-admin", password="x"))
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("page", PAGES)
def test_each_page_sends_the_policy_and_runs_no_inline_script_without_its_hash(page, staff, job, settings) -> None:
    settings.S3_PUBLIC_ENDPOINT_URL = "https://blobs.example.net:8443/some/prefix"

    response = staff.get(page.format(job=job.pk))

    assert response.status_code == 200
    policy = directives(response["Content-Security-Policy"])
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"][0] == "'self'"
    assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-eval'" not in policy["script-src"]
    assert policy["connect-src"] == ["'self'", "https://blobs.example.net:8443"]
    assert policy["img-src"] == ["'self'", "data:"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["form-action"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    html = response.content.decode()
    for attributes, text in inline_scripts(html):
        nonce = re.search(r'\bnonce="([^"]+)"', attributes)
        allowed = f"'nonce-{nonce.group(1)}'" if nonce else f"'{csp.script_hash(text)}'"
        assert allowed in policy["script-src"], f"an inline script on {page} would be blocked: {text[:200]!r}"
    assert not re.findall(r"<[^>]+\son[a-z]+=", html), f"an event handler attribute on {page} would be blocked"
    assert policy["style-src"] == ["'self'"]
    assert not re.findall(r"<style\b|<[^>]+\sstyle=", html), f"an inline style on {page} would be blocked"


@pytest.mark.django_db
def test_the_job_page_sends_the_policy_to_a_page_link_too(job) -> None:
    response = Client().get(f"/tasks/{job.pk}/", {"t": page_token(job.pk)})

    assert response.status_code == 200
    assert "connect-src 'self' " in response["Content-Security-Policy"]


def test_the_admin_login_page_sends_the_policy(client) -> None:
    assert "script-src 'self'" in client.get("/admin/login/")["Content-Security-Policy"]


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_on_aws_connect_src_allows_the_origin_of_the_presigned_blob_url(region, settings, client) -> None:
    settings.S3_ENDPOINT_URL = settings.S3_PUBLIC_ENDPOINT_URL = None
    settings.S3_REGION = region
    settings.S3_ACCESS_KEY_ID, settings.S3_SECRET_ACCESS_KEY = "AKIDEXAMPLE", "secret"
    storage.s3_public_client.cache_clear()
    try:
        url = storage.s3_public_client().generate_presigned_url(
            "get_object", Params={"Bucket": settings.S3_BUCKET, "Key": settings.STATS_BLOB_KEY}, ExpiresIn=60
        )
    finally:
        storage.s3_public_client.cache_clear()
    header = client.get("/api/docs/")["Content-Security-Policy"]

    connect_src = directives(header)["connect-src"]
    assert csp.origin(url) in connect_src
    assert f"https://{settings.S3_BUCKET}.s3.{region}.amazonaws.com" in connect_src
    assert f"https://s3.{region}.amazonaws.com" in connect_src


def test_json_answers_of_the_write_path_carry_no_policy(client) -> None:
    """The hot path pays for no header it does not need (a policy governs documents only)."""
    response = client.post("/message/write/", {}, content_type="application/json")

    assert response.status_code == 400
    assert "Content-Security-Policy" not in response


# --- in a real browser --------------------------------------------------------------------------


@pytest.fixture
def tab() -> Iterator[Tab]:
    with Tab(1280, 900) as browser:
        browser.send("Log.enable")  # CSP violations are reported as browser log entries
        yield browser


def violations(tab: Tab) -> list[str]:
    tab.js("1")  # collect the events that arrived since the last command
    return [
        event["params"]["entry"]["text"]
        for event in tab.events
        if event.get("method") == "Log.entryAdded" and "Content Security Policy" in event["params"]["entry"]["text"]
    ]


@pytest.fixture
def blob_on_s3(s3_server, live_server, settings) -> Iterator[str]:
    """A published blob in a bucket of its own that the live server's pages may read."""
    settings.S3_ENDPOINT_URL = settings.S3_PUBLIC_ENDPOINT_URL = s3_server
    settings.S3_BUCKET = f"csp-{timezone.now():%H%M%S%f}"
    settings.STATS_CORS_ALLOWED_ORIGINS = [live_server.url]
    s3_clients_reset()
    assert publish.stats_publish(force=True, now=timezone.now())
    yield s3_server
    s3_clients_reset()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_dashboard_draws_the_blob_from_s3_under_the_enforced_policy(blob_on_s3, live_server, tab) -> None:
    tab.open(f"{live_server.url}/stat/")
    tab.wait_for("document.getElementById('status').textContent.startsWith('Generated')")

    # The blob came from another origin than the page's: connect-src let it through.
    assert urlsplit(blob_on_s3).netloc != urlsplit(live_server.url).netloc
    assert violations(tab) == []


@pytest.mark.browser
def test_the_api_docs_render_under_the_enforced_policy(live_server, tab) -> None:
    tab.open(f"{live_server.url}/api/docs/")
    tab.wait_for("document.querySelectorAll('.opblock').length > 10")

    assert violations(tab) == []
