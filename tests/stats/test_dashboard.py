"""The dashboard in a real headless Chromium: the page follows /stat/get/ to S3 (an S3
server that applies the bucket's CORS rules, as AWS does) and draws the blob."""

from datetime import timedelta
from html.parser import HTMLParser

import pytest
import requests

from stats import selectors
from stats.services.publish import stats_publish
from tests.browser import page_dom, page_screenshot
from tests.stats.conftest import payload, store

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

EVIL = "<img src=x onerror=document.title='owned'>"


class Page(HTMLParser):
    """What a reader sees: the text of each element with an id (its whole subtree), the texts
    of the elements with a class, by nearest id ("top-users .name"), and every tag."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.text: dict[str, str] = {}
        self.texts: dict[str, list[str]] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._open: list[tuple[str, str | None, str | None]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag not in ("meta", "br", "img", "input", "link"):
            self._open.append((tag, attributes.get("id"), attributes.get("class")))
            if attributes.get("id"):
                self.text[attributes["id"]] = ""

    def handle_endtag(self, tag):
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data):
        ids = [element_id for _, element_id, _ in self._open if element_id]
        for element_id in ids:
            self.text[element_id] += data
        if ids and self._open[-1][2]:
            self.texts.setdefault(f"{ids[-1]} .{self._open[-1][2]}", []).append(data)


@pytest.fixture
def dashboard_s3(own_s3, live_server, settings):
    """S3 that lets the live server's pages read the blob, and nothing else."""
    settings.STATS_CORS_ALLOWED_ORIGINS = [live_server.url]
    return own_s3


def known_data_set(minute):
    rows = [payload("alice", "Austin", "TX", minute - timedelta(minutes=1)) for _ in range(3)]
    rows += [payload("bob", "Fresno", "CA", minute) for _ in range(2)]
    rows += [payload(EVIL, "<script>alert(1)</script>", "CA", minute)]
    store(rows)


def test_the_bucket_lets_only_the_dashboards_origin_read_the_blob(dashboard_s3, live_server, minute):
    stats_publish(now=minute)
    location = requests.get(f"{live_server.url}/stat/get/", allow_redirects=False, timeout=5).headers["Location"]

    allowed = requests.get(location, headers={"Origin": live_server.url}, timeout=5)
    other = requests.get(location, headers={"Origin": "http://evil.example"}, timeout=5)

    assert allowed.headers.get("Access-Control-Allow-Origin") == live_server.url
    assert "Access-Control-Allow-Origin" not in other.headers


def test_the_dashboard_draws_a_known_data_set_and_shows_names_as_text(
    dashboard_s3, live_server, artifacts_dir, django_user_model
):
    from django.utils import timezone

    now = timezone.now()
    known_data_set(now)
    stats_publish(now=now)
    url = f"{live_server.url}/stat/"

    page = Page(page_dom(url))
    page_screenshot(url, artifacts_dir / "stats-dashboard.png")

    assert page.text["status"].startswith("Updated"), page.text["status"]
    assert [page.text[f"total-{name}"] for name in ("messages", "users", "cities", "states")] == ["6", "3", "3", "2"]
    assert page.texts["top-users .name"] == ["alice", "bob", EVIL]
    assert page.texts["top-users .count"] == ["3", "2", "1"]
    assert page.texts["top-cities .name"] == ["Austin, TX", "Fresno, CA", "<script>alert(1)</script>, CA"]
    assert page.texts["states .state-name"] == ["CA", "TX"]
    assert page.texts["states .state-count"] == ["3", "3"]
    assert [tag for tag, attrs in page.tags if tag == "img"] == [], "a name was parsed as markup"
    timeline = [attrs["points"] or "" for tag, attrs in page.tags if tag == "polyline"]
    assert len(timeline) == 1 and len(timeline[0].split()) == 60
    assert (artifacts_dir / "stats-dashboard.png").stat().st_size > 10_000


def test_before_the_first_publish_the_dashboard_says_the_stats_are_coming(dashboard_s3, live_server):
    page = Page(page_dom(f"{live_server.url}/stat/", budget_ms=2000))

    assert page.text["status"].startswith("Statistics are being prepared"), page.text["status"]
    assert page.text["total-messages"] == "\N{EN DASH}"


def test_the_dashboard_fetches_the_blob_again_every_minute(dashboard_s3, live_server, monkeypatch, minute):
    stats_publish(now=minute)
    fetched = []
    real = selectors.stats_published

    def counting() -> dict | None:
        fetched.append(True)
        return real()

    # A spy, not a stand-in: every call still reads Redis.
    monkeypatch.setattr(selectors, "stats_published", counting)

    page = Page(page_dom(f"{live_server.url}/stat/", budget_ms=150_000))

    assert page.text["status"].startswith("Updated")
    assert len(fetched) == 3, "at 0, 60 and 120 s of (virtual) time"
