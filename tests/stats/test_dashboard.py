"""The dashboard in a real headless Chromium: the page follows /stat/get/ to S3 (an S3
server that applies the bucket's CORS rules, as AWS does) and draws the blob.

The tests look at the page as a reader does, at desktop width and at a phone's 390 px: the
text of elements, whether they are visible, and where their boxes fall. Screenshots go to
test-artifacts/.
"""

import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
import requests
from django.test import Client
from django.utils import timezone

from stats import selectors
from stats.services.publish import stats_publish
from tests.browser import Tab, page_dom
from tests.stats.conftest import payload, store

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

EVIL = "<img src=x onerror=document.title='owned'>"
LONG_USER = "u" * 24 + "-a-username-of-sixty-four-characters-0123456"
LONG_STATE = "Nordrhein-Westfalen"
LONG_CITY = "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch"
DESKTOP = (1280, 900)
PHONE = (390, 844)

# What a reader sees of an element: its text if it is rendered at all.
VISIBLE_TEXT = (
    "(s => { const e = document.querySelector(s);"
    " return e && e.checkVisibility() ? (e.innerText ?? e.textContent) : null; })"
)


@pytest.fixture
def dashboard_s3(own_s3, live_server, settings):
    """S3 that lets the live server's pages read the blob, and nothing else."""
    settings.STATS_CORS_ALLOWED_ORIGINS = [live_server.url]
    return own_s3


@pytest.fixture
def tab() -> Iterator[Tab]:
    with Tab(*DESKTOP) as browser:
        yield browser


def publish(now: datetime) -> None:
    assert stats_publish(now=now, force=True)


def full_data_set(now: datetime) -> None:
    """A busy hour: a rising and falling timeline, long and hostile names, many states."""
    rows = []
    for minutes_ago in range(60):
        for _ in range(1 + (60 - abs(30 - minutes_ago) * 2) // 6):
            rows.append(payload("alice", "Austin", "TX", now - timedelta(minutes=minutes_ago)))
    rows += [payload(LONG_USER, LONG_CITY, LONG_STATE, now - timedelta(minutes=2)) for _ in range(400)]
    rows += [payload("bob", "Fresno", "CA", now - timedelta(minutes=3)) for _ in range(25)]
    rows += [payload(EVIL, "<script>alert(1)</script>", "CA", now - timedelta(minutes=4))]
    for i, state in enumerate(["Bayern", "Hessen", "NY", "WA", "Baden-Württemberg", "Sachsen-Anhalt"]):
        rows += [payload(f"user{i}", f"City {i}", state, now - timedelta(minutes=5 + i)) for _ in range(10 - i)]
    store(rows)


def dashboard_ready(tab: Tab, url: str) -> None:
    tab.open(url)
    tab.wait_for("document.getElementById('status').textContent.startsWith('Generated')")


def visible(tab: Tab, selector: str) -> str | None:
    return tab.js(f"{VISIBLE_TEXT}({selector!r})")


def box(tab: Tab, selector: str, index: int = 0, parent: bool = False) -> dict[str, float]:
    """Where an element (or its parent) is drawn, in CSS pixels of the viewport."""
    element = f"document.querySelectorAll({selector!r})[{index}]" + (".parentElement" if parent else "")
    return tab.js(
        f"(() => {{ const r = {element}.getBoundingClientRect();"
        " return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width, height: r.height}; })()"
    )


def texts(tab: Tab, selector: str, attribute: str = "") -> list[str]:
    read = f"e.getAttribute({attribute!r})" if attribute else "e.textContent"
    return tab.js(f"[...document.querySelectorAll({selector!r})].map(e => {read})")


def assert_no_inline_code(html: str) -> None:
    """What a Content-Security-Policy without 'unsafe-inline' would block: inline scripts and
    styles, style attributes and event handler attributes in the served markup."""
    assert re.findall(r"<script(?![^>]*\ssrc=)[^>]*>|<style|\sstyle=|\son[a-z]+=", html) == []
    assert re.search(r'<script src="/stat/dashboard.js" defer>', html)


def test_the_bucket_lets_only_the_dashboards_origin_read_the_blob(dashboard_s3, live_server, minute):
    publish(minute)
    location = requests.get(f"{live_server.url}/stat/get/", allow_redirects=False, timeout=5).headers["Location"]

    allowed = requests.get(location, headers={"Origin": live_server.url}, timeout=5)
    other = requests.get(location, headers={"Origin": "http://evil.example"}, timeout=5)

    assert allowed.headers.get("Access-Control-Allow-Origin") == live_server.url
    assert "Access-Control-Allow-Origin" not in other.headers


def test_the_dashboard_draws_a_full_data_set_at_desktop_width(dashboard_s3, live_server, artifacts_dir, tab):
    now = timezone.now()
    full_data_set(now)
    publish(now)

    dashboard_ready(tab, f"{live_server.url}/stat/")
    tab.screenshot(artifacts_dir / "dashboard-desktop.png")

    assert [visible(tab, f"#total-{name}") for name in ("messages", "users", "cities", "states")] == [
        "811",
        "10",
        "10",
        "9",
    ]
    assert texts(tab, "#top-users .name")[:3] == [LONG_USER, "alice", "bob"]
    assert EVIL in texts(tab, "#top-users .name")
    assert "<script>alert(1)</script>, CA" in texts(tab, "#top-cities .name")
    assert tab.js("document.title") == "Messy statistics"
    assert tab.js("document.querySelectorAll('main img').length") == 0, "a name was parsed as markup"
    assert texts(tab, "#states .name")[:3] == [LONG_STATE, "TX", "CA"]
    assert texts(tab, "#states .count")[:3] == ["400", "340", "26"]
    assert_no_inline_code(requests.get(f"{live_server.url}/stat/", timeout=5).text)
    # The freshness line comes from the blob, not from when the browser fetched it.
    assert (visible(tab, "#status") or "").startswith("Generated ")
    assert visible(tab, "#stale") is None
    # Axes: labelled, with ticks and gridlines, and the current rate.
    assert visible(tab, "#y-axis-title") == "Messages per minute"
    assert tab.js("document.getElementById('x-axis-title').textContent").startswith("Time (")
    assert len(texts(tab, "#timeline .tick-y")) >= 3
    assert len(texts(tab, "#timeline .tick-x")) >= 4
    assert len(texts(tab, "#timeline line.grid")) >= 5
    assert re.fullmatch(r"\d+ messages?/min \(minute to \d\d:\d\d\)", visible(tab, "#rate-now") or "")
    # Each chart has a name and a data table for assistive technology.
    assert tab.js("document.querySelector('#timeline svg').getAttribute('role')") == "img"
    assert "messages per minute" in str(tab.js("document.querySelector('#timeline svg').getAttribute('aria-label')"))
    assert tab.js("document.querySelectorAll('#timeline-table tbody tr').length") == 60
    assert texts(tab, "#states-table tbody th")[0] == LONG_STATE
    assert texts(tab, "#top-users-table tbody th")[0] == LONG_USER
    for chart in ("states", "top-cities", "top-users"):
        assert tab.js(f"document.getElementById('{chart}').getAttribute('aria-label')")
        hidden_table = box(tab, f"#{chart}-table", parent=True)
        assert hidden_table["width"] <= 1 and hidden_table["height"] <= 1, "the table is for screen readers only"


def test_a_hover_on_the_timeline_reads_out_the_minute_under_the_pointer(dashboard_s3, live_server, tab):
    now = timezone.now()
    full_data_set(now)
    publish(now)
    dashboard_ready(tab, f"{live_server.url}/stat/")
    assert visible(tab, "#timeline-readout") is None

    plot = box(tab, "#timeline svg")
    tab.mouse_move(plot["right"] - 20, plot["top"] + 40)

    readout = tab.wait_for(f"{VISIBLE_TEXT}('#timeline-readout')")
    assert str(readout).endswith(" messages") and "UTC" in str(readout)


def test_times_are_in_the_viewers_zone_with_utc_on_a_toggle(dashboard_s3, live_server, minute):
    publish(minute)  # 12:34:56 UTC
    with Tab(*DESKTOP, timezone="America/New_York") as tab:
        tab.open(f"{live_server.url}/stat/")
        tab.wait_for("document.getElementById('generated-at').textContent !== '\N{EN DASH}'")

        local = visible(tab, "#generated-at") or ""
        assert "7:34:56" in local and "America/New_York" in local, local
        assert "12:34:56" in str(tab.js("document.getElementById('generated-at').title"))
        assert tab.js("document.getElementById('x-axis-title')?.textContent ?? null") in (
            None,
            "Time (America/New_York)",
        )
        assert "(America/New_York)" in texts(tab, "#timeline-table caption")[0]

        tab.js("document.getElementById('zone-toggle').click()")

        assert "12:34:56" in (visible(tab, "#generated-at") or "")
        assert "(UTC)" in texts(tab, "#timeline-table caption")[0]
        assert tab.js("document.getElementById('zone-toggle').getAttribute('aria-pressed')") == "true"


def test_at_390_px_nothing_overflows_the_cards_wrap_and_text_stays_readable(dashboard_s3, live_server, artifacts_dir):
    now = timezone.now()
    full_data_set(now)
    publish(now)
    with Tab(*PHONE) as tab:
        dashboard_ready(tab, f"{live_server.url}/stat/")
        tab.screenshot(artifacts_dir / "dashboard-phone.png")

        assert tab.js("document.documentElement.scrollWidth") <= 390
        card_rows = {round(box(tab, ".card", i)["top"]) for i in range(4)}
        assert len(card_rows) == 2, "the four total cards wrap onto two rows"
        assert all(box(tab, ".card", i)["right"] <= 390 for i in range(4))
        # Timeline text at its CSS size, not scaled down with the drawing.
        tick = box(tab, "#timeline .tick-x")
        assert tick["height"] >= 10, tick
        assert box(tab, "#timeline svg")["right"] <= 390
        assert visible(tab, "#y-axis-title") == "Messages per minute"


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_long_labels_are_ellipsized_with_the_full_name_on_hover_and_counts_stay_visible(
    dashboard_s3, live_server, size
):
    now = timezone.now()
    full_data_set(now)
    publish(now)
    with Tab(*size) as tab:
        dashboard_ready(tab, f"{live_server.url}/stat/")

        for panel, label in (
            ("states", LONG_STATE),
            ("top-users", LONG_USER),
            ("top-cities", f"{LONG_CITY}, {LONG_STATE}"),
        ):
            names = texts(tab, f"#{panel} .name")
            index = names.index(label)
            assert texts(tab, f"#{panel} .name", "title")[index] == label
            name, container = box(tab, f"#{panel} .name", index), box(tab, f"#{panel}")
            assert container["left"] <= name["left"] and name["right"] <= container["right"], (panel, name, container)
            count = box(tab, f"#{panel} .count", index)
            assert count["width"] > 0 and count["right"] <= min(size[0], container["right"]), (panel, count)
            assert name["right"] <= count["left"]
        # The state's name is short enough to be shown whole on a desktop; the username is not.
        user = tab.js(
            "(() => { const e = document.querySelectorAll('#top-users .name')[0];"
            " return [e.scrollWidth, e.clientWidth]; })()"
        )
        assert user[0] > user[1], "the 64-character username is ellipsized"
        assert tab.js("getComputedStyle(document.querySelector('#top-users .name')).textOverflow") == "ellipsis"


def test_a_blob_generated_three_hours_ago_is_flagged_stale(dashboard_s3, live_server, artifacts_dir, settings, tab):
    settings.STATS_STALE_AFTER_SECONDS = 180
    then = timezone.now() - timedelta(hours=3)
    full_data_set(then)
    publish(then)

    dashboard_ready(tab, f"{live_server.url}/stat/")
    tab.screenshot(artifacts_dir / "dashboard-stale.png")

    assert (visible(tab, "#status") or "").startswith("Generated 3 h 0 min ago")
    warning = visible(tab, "#stale") or ""
    assert warning.startswith("Stale: these statistics were generated 3 h 0 min ago"), warning
    assert "celery beat" in warning
    assert tab.js("document.getElementById('stale').getAttribute('role')") == "alert"


def test_a_fresh_blob_is_not_flagged_stale_until_the_threshold(dashboard_s3, live_server, settings, tab):
    settings.STATS_STALE_AFTER_SECONDS = 600
    publish(timezone.now() - timedelta(minutes=5))

    dashboard_ready(tab, f"{live_server.url}/stat/")

    assert (visible(tab, "#status") or "").startswith("Generated 5 min ")
    assert visible(tab, "#stale") is None


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_with_no_messages_every_panel_shows_the_same_empty_state(dashboard_s3, live_server, artifacts_dir, size):
    publish(timezone.now())
    with Tab(*size) as tab:
        dashboard_ready(tab, f"{live_server.url}/stat/")
        if size == DESKTOP:
            tab.screenshot(artifacts_dir / "dashboard-empty.png")

        for panel in ("timeline", "states", "top-cities", "top-users"):
            assert visible(tab, f"#{panel} .empty") == "No messages yet.", panel
        assert visible(tab, "#total-messages") == "0"
        assert tab.js("document.documentElement.scrollWidth") <= size[0]


def test_a_cors_refusal_names_the_two_settings_to_check(own_s3, live_server, settings, artifacts_dir, tab):
    settings.STATS_CORS_ALLOWED_ORIGINS = ["http://elsewhere.example"]
    publish(timezone.now())

    tab.open(f"{live_server.url}/stat/")
    problem = str(tab.wait_for(f"{VISIBLE_TEXT}('#problem')"))
    tab.screenshot(artifacts_dir / "dashboard-cors-error.png")

    assert "STATS_CORS_ALLOWED_ORIGINS" in problem and "S3_PUBLIC_ENDPOINT_URL" in problem
    assert live_server.url in problem
    assert texts(tab, "#problem code") == ["STATS_CORS_ALLOWED_ORIGINS", "S3_PUBLIC_ENDPOINT_URL"]
    assert tab.js("document.getElementById('problem').getAttribute('role')") == "alert"


def test_before_the_first_publish_the_dashboard_says_the_stats_are_coming(dashboard_s3, live_server, tab):
    tab.open(f"{live_server.url}/stat/")

    tab.wait_for("document.getElementById('status').textContent.startsWith('Statistics are being prepared')")
    assert visible(tab, "#total-messages") == "\N{EN DASH}"
    assert visible(tab, "#problem") is None


def test_the_dashboard_fetches_the_blob_again_every_minute(dashboard_s3, live_server, monkeypatch, minute):
    publish(minute)
    fetched = []
    real = selectors.stats_published

    def counting() -> dict | None:
        fetched.append(True)
        return real()

    # A spy, not a stand-in: every call still reads Redis.
    monkeypatch.setattr(selectors, "stats_published", counting)

    dom = page_dom(f"{live_server.url}/stat/", budget_ms=150_000)

    assert 'id="status" role="status">Generated ' in dom
    assert len(fetched) == 3, "at 0, 60 and 120 s of (virtual) time"


class TestLoginRequired:
    """STATS_LOGIN_REQUIRED: the dashboard and /stat/get/ for staff sessions only."""

    @pytest.fixture(autouse=True)
    def required(self, settings, own_s3):
        settings.STATS_LOGIN_REQUIRED = True
        publish(timezone.now())

    def test_without_a_session_the_blob_redirect_answers_401_in_the_shared_shape(self, client):
        response = client.get("/stat/get/")

        assert response.status_code == 401
        assert response.json()["error"] == "authentication_required"

    def test_a_user_who_is_not_staff_gets_403(self, client, django_user_model):
        client.force_login(django_user_model.objects.create_user("viewer", password="x"))

        assert client.get("/stat/get/").status_code == 403
        assert client.get("/stat/").status_code == 302

    def test_without_a_session_the_dashboard_sends_the_browser_to_the_admin_login(self, client):
        response = client.get("/stat/")

        assert response.status_code == 302
        assert response["Location"] == "/admin/login/?next=/stat/"

    def test_staff_see_the_dashboard_and_the_blob(self, admin_client):
        assert admin_client.get("/stat/").status_code == 200
        assert admin_client.get("/stat/get/").status_code == 302

    def test_by_default_anyone_may_read(self, settings):
        settings.STATS_LOGIN_REQUIRED = False
        client = Client()

        assert client.get("/stat/").status_code == 200
        assert client.get("/stat/get/").status_code == 302
