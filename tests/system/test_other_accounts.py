"""As another local account on make run's host (`runuser -u nobody`), and as an anonymous client:
the web tier is reached only through the front door, and its processes run as `messy`.

make run's shape: root starts the run scripts of a checkout that `messy` could not read before
scripts/service-users.sh (one in a mktemp -d folder, 0700, like one under /root), with
MESSY_USER=messy and a private run folder; nginx's workers run as messy-front (docs/deployment.md).
"""

import grp
import http.client
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import REDIS_STAGING_SERVER, ROOT, SYSTEM, free_port, wait_for_port
from tests.system.stack import Stack, message_body

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="starts processes as other accounts (root)")

LISTEN_PROBE = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(type(exc).__name__)
else:
    print("connected")
"""


def as_nobody(*args: str) -> str:
    result = subprocess.run(["runuser", "-u", "nobody", "--", *args], capture_output=True, text=True, timeout=30)
    return result.stdout.strip() + result.stderr.strip()


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid for {pid}")


def process_tree(pid: int) -> set[int]:
    pids, todo = set(), [pid]
    while todo:
        current = todo.pop()
        pids.add(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            todo += [int(child) for child in task.read_text().split()]
    return pids


def tcp_listeners_of(pids: set[int]) -> list[str]:
    lines = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [line for line in lines if any(f"pid={pid}," in line for pid in pids)]


@pytest.fixture
def checkout() -> Iterator[Path]:
    """A copy of this checkout in a mktemp -d folder (0700: `messy` cannot enter it), given to
    `messy` as make run does (scripts/service-users.sh)."""
    folder = Path(tempfile.mkdtemp(prefix="messy-checkout-"))
    copy = folder / "messy"
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            (copy / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name.decode())
    (copy / ".venv").symlink_to((ROOT / ".venv").resolve())
    assert subprocess.run(["runuser", "-u", "messy", "--", "test", "-r", str(copy / "manage.py")]).returncode != 0
    subprocess.run([str(copy / "scripts" / "service-users.sh")], check=True, timeout=120)
    try:
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def make_run_shape(stack: Stack, checkout: Path) -> Iterator[tuple[Stack, Path]]:
    """Web (one process), a worker, beat, Flower and the front door, started by root as make run starts
    them, with a run folder of their own; returns the stack and the web socket."""
    run_dir = Path(tempfile.mkdtemp(prefix="messy-run-"))
    run_dir.chmod(0o755)
    # The test's staging Redis socket is root's (make run's Redis gives messy its socket's group).
    staging = f"{REDIS_STAGING_SERVER}/{SYSTEM.redis_db}"
    stack.env = {**stack.env, "MESSY_USER": "messy", "MESSY_RUN_DIR": str(run_dir), "REDIS_URL": staging}
    web_socket = run_dir / "web" / "web.sock"
    try:
        stack.start("web", [str(checkout / "runserver.sh")], WEB_PROCESSES="1")
        deadline = time.monotonic() + 30
        while not web_socket.is_socket() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert web_socket.is_socket(), "the web process never made its socket"
        stack.start("worker", [str(checkout / "runworker.sh"), "ingest"], WORKER_INGEST_CONCURRENCY="1")
        stack.start("beat", [str(checkout / "runbeat.sh")])
        flower_port = free_port()
        stack.start("flower", [str(checkout / "scripts" / "flower.sh")], FLOWER_PORT=str(flower_port))
        wait_for_port(flower_port, timeout=30)
        stack.front_port = free_port()
        front_dir = run_dir / "nginx"
        stack.front(stack.front_port, 0, front_dir, through_socket=web_socket)
        yield stack, web_socket
    finally:
        stack.stop_all()
        shutil.rmtree(run_dir, ignore_errors=True)


def front_get(stack: Stack, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", stack.front_port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_only_the_front_door_reaches_the_web_tier_and_it_runs_as_messy(make_run_shape):
    stack, web_socket = make_run_shape
    messy = pwd.getpwnam("messy").pw_uid

    # The socket: 0660, group messy-web, in a folder others cannot enter.
    mode = web_socket.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o660, oct(mode.st_mode)
    assert grp.getgrgid(mode.st_gid).gr_name == "messy-web"
    assert stat.S_IMODE(web_socket.parent.stat().st_mode) & 0o007 == 0
    assert as_nobody("python3", "-c", LISTEN_PROBE, str(web_socket)) == "PermissionError"
    # The front door's workers (messy-front, group messy-web) do reach it.
    status, body = front_get(stack, "/readyz")
    assert status == 200, body

    # No TCP listener of the web tier (MESSY_BIND unset); 8001 is not one of them.
    web_pids = process_tree(stack.processes["web"].pid)
    assert tcp_listeners_of(web_pids) == []
    # Web, worker, beat and Flower run as messy, their children too.
    for name in ("web", "worker", "beat", "flower"):
        pids = process_tree(stack.processes[name].pid)
        assert {uid_of(pid) for pid in pids} == {messy}, name


def test_operator_endpoints_refuse_an_anonymous_client_through_the_front_door(make_run_shape):
    stack, _ = make_run_shape
    for path in ("/status", "/metrics"):
        status, body = front_get(stack, path)
        assert status == 401, (path, body)
        assert "messy_build_info" not in body and ".sock" not in body
        answer = as_nobody(
            "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{stack.front_port}{path}"
        )
        assert answer == "401", (path, answer)
    assert front_get(stack, "/readyz")[0] == 200


def test_gunicorn_takes_the_front_doors_request_line_and_no_longer(make_run_shape):
    _, web_socket = make_run_shape

    def request_line(length: int) -> str:
        path = "/healthz?" + "a" * (length - len("GET /healthz? HTTP/1.1"))
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(10)
        client.connect(str(web_socket))
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        answer = client.recv(200).decode(errors="replace")
        client.close()
        return answer.split("\r\n", 1)[0]

    assert " 200 " in request_line(60_000)
    assert " 414 " in request_line(70_000), "longer than nginx's large_client_header_buffers (64 KB)"


def test_a_write_goes_through_the_front_door_to_the_socket(make_run_shape):
    stack, _ = make_run_shape
    connection = http.client.HTTPConnection("127.0.0.1", stack.front_port, timeout=10)
    connection.request("POST", "/message/write/", json.dumps(message_body(1)), {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 202, response.read()
    connection.close()
