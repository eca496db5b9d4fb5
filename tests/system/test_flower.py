"""Flower through the front door at /flower/, for staff only: the front door asks the web tier
(auth_request) whether the request carries a staff session, and Flower itself listens on
127.0.0.1 only. With a worker running, Flower shows it, the queues and its tasks (task events)."""

import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.harness import ROOT, VENV_BIN

pytestmark = pytest.mark.system

STAFF = ("flower-op", "flower-op-password")


def manage_shell(stack, code: str) -> str:
    result = subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", "shell", "-v", "0", "-c", code],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def users_create(stack) -> str:
    """The staff user (who logs in through the admin login), and a session of a logged-in user
    who is not staff (the admin login would refuse them); returns that session's key."""
    return manage_shell(
        stack,
        f"""
from django.contrib.auth import get_user_model, BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
User = get_user_model()
User.objects.filter(username__in=["{STAFF[0]}", "flower-viewer"]).delete()
User.objects.create_user("{STAFF[0]}", password="{STAFF[1]}", is_staff=True)
viewer = User.objects.create_user("flower-viewer", password="x")
session = SessionStore()
session[SESSION_KEY] = str(viewer.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = viewer.get_session_auth_hash()
session.create()
print(session.session_key)
""",
    )


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on `port` (IPv4 and IPv6), from the kernel's tables."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                addresses.add(address)
    return addresses


def staff_login(front: str) -> requests.Session:
    """Log in as staff through the admin login form, as a person would."""
    browser = requests.Session()
    form = browser.get(f"{front}/admin/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert token, form.text[:500]
    response = browser.post(
        f"{front}/admin/login/?next=/admin/",
        data={"username": STAFF[0], "password": STAFF[1], "csrfmiddlewaretoken": token[1]},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302, response.text[:500]
    assert "sessionid" in browser.cookies
    return browser


def test_flower_is_served_through_the_front_door_to_staff_only(stack):
    viewer_session = users_create(stack)
    stack.start_web()
    stack.start_worker()
    stack.start_flower()
    front = stack.start_front()

    # No session: sent to the admin login, never to Flower.
    anonymous = requests.get(f"{front}/flower/", allow_redirects=False, timeout=10)
    assert anonymous.status_code == 302
    assert anonymous.headers["Location"].endswith("/admin/login/?next=/flower/")
    assert requests.get(f"{front}/flower/broker", allow_redirects=False, timeout=10).status_code == 302

    # Logged in but not staff: refused.
    viewer = requests.get(f"{front}/flower/", cookies={"sessionid": viewer_session}, allow_redirects=False, timeout=10)
    assert viewer.status_code == 403

    # A forged or expired session is no session.
    forged = requests.get(f"{front}/flower/", cookies={"sessionid": "x" * 32}, allow_redirects=False, timeout=10)
    assert forged.status_code == 302

    browser = staff_login(front)
    page = browser.get(f"{front}/flower/", allow_redirects=False, timeout=10)
    assert page.status_code == 200
    assert "Flower" in page.text
    # Its own assets come through the same prefix.
    assert browser.get(f"{front}/flower/static/css/flower.css", timeout=10).status_code == 200

    # The queues, read from the broker.
    broker = browser.get(f"{front}/flower/broker", timeout=10)
    assert broker.status_code == 200
    for queue in ("ingest", "stats"):
        assert queue in broker.text

    # A write makes the worker run a drain; its task events reach Flower.
    written = requests.post(
        f"{front}/message/write/",
        json={"username": "ada", "city": "London", "state": "LDN", "message": "hello"},
        timeout=10,
    )
    assert written.status_code == 202
    deadline = time.monotonic() + 60
    workers: dict = {}
    while time.monotonic() < deadline:
        workers = {w["hostname"]: w for w in browser.get(f"{front}/flower/workers?json=1", timeout=10).json()["data"]}
        ingest = next((w for name, w in workers.items() if name.startswith("ingest@")), None)
        if ingest and ingest.get("status") and ingest.get("task-succeeded", 0) >= 1:
            break
        time.sleep(1)
    else:
        pytest.fail(f"Flower never saw the worker run a task: {workers}")

    # Flower has no authentication of its own: it listens on 127.0.0.1 only.
    assert listening_addresses(stack.flower_port) == {"0100007F"}  # 127.0.0.1, as /proc/net/tcp spells it
