"""Another local account against make run's data tier (issue 21): as user nobody, nothing of
Messy's Redis servers, memcached, the local S3's internal servers or local.sh is reachable.
The services start as make run starts them (scripts/redis.sh, scripts/memcached.sh,
scripts/s3.sh, run by root: each as its own system user), their data in a folder of the
checkout, each Redis also on TCP (REDIS_BIND, as for other hosts: the worst case). Root only.
docs/data-tier.md."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import REDIS_PASSWORDS, ROOT, free_port, free_port_block, port_open, redis_admin

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="starts the services as root and probes as user nobody"),
]

# What user nobody tries, in a process of its own (the system's Python: the virtualenv's may
# live where nobody cannot go), standard library only; prints one JSON object of outcomes.
PROBE = r"""
import json, socket, ssl, sys, urllib.error, urllib.request
folder, staging_port, broker_port, s3_port = sys.argv[1], *map(int, sys.argv[2:])
out = {}

def attempt(name, call):
    # Refused: by permissions, a password or a certificate. Absent: nothing listens there,
    # which proves nothing (the test fails on it too).
    try:
        out[name] = "answered: " + repr(call())[:80]
    except PermissionError as error:
        out[name] = f"refused: {error}"
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as error:
        out[name] = f"refused: {type(error).__name__}"
    except OSError as error:
        out[name] = f"absent: {type(error).__name__} {error}"

def redis(address, *command):
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family) as client:
        client.settimeout(3)
        client.connect(address)
        client.sendall(b"".join([b"*%d\r\n" % len(command)] + [b"$%d\r\n%s\r\n" % (len(p), p) for p in command]))
        reply = client.recv(200)
    if reply.startswith((b"-NOAUTH", b"-NOPERM", b"-WRONGPASS")):
        raise PermissionError(reply.decode().strip())
    return reply

for name, port in (("staging", staging_port), ("broker", broker_port)):
    attempt(f"{name} socket", lambda: redis(f"{folder}/redis-{name}/redis.sock", b"PING"))
    attempt(f"{name} tcp", lambda: redis(("127.0.0.1", port), b"PING"))
    attempt(f"{name} tcp keys", lambda: redis(("127.0.0.1", port), b"KEYS", b"*"))
    attempt(f"{name} tcp config", lambda: redis(("127.0.0.1", port), b"CONFIG", b"SET", b"appendonly", b"no"))

def memcached():
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(f"{folder}/memcached/memcached.sock")
        client.sendall(b"stats\r\n")
        return client.recv(100)
attempt("memcached socket", memcached)

def http(url, method="GET", body=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method=method), timeout=3) as response:
            return response.status
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            raise PermissionError(error.code) from None
        return error.code
attempt("filer read", lambda: http(f"http://127.0.0.1:{s3_port + 6}/buckets/"))
attempt("filer write", lambda: http(f"http://127.0.0.1:{s3_port + 6}/buckets/b/stats/latest.json", "PUT", b"{}"))
attempt("volume read", lambda: http(f"http://127.0.0.1:{s3_port + 4}/1,0100000000"))

def grpc_without_certificate(port):
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
        with context.wrap_socket(raw) as tls:
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            data = tls.recv(100)
            if not data:
                raise ConnectionResetError("closed")
            return data
for name, offset in (("master grpc", 3), ("volume grpc", 5), ("filer grpc", 7)):
    attempt(name, lambda: grpc_without_certificate(s3_port + offset))

attempt("local.sh", lambda: open(f"{folder}/checkout/local.sh").read())
print(json.dumps(out))
"""
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or "python3"


def _wait(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not come up")
        time.sleep(0.1)


@pytest.fixture
def data_tier() -> Iterator[dict]:
    """Both Redis servers, memcached and the local S3 as make run starts them, in a folder of
    the checkout (not /tmp: the local S3 then gets a /tmp of its own, as under make run)."""
    (ROOT / "var").mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="data-tier-access-", dir=ROOT / "var"))
    folder.chmod(0o755)
    if subprocess.run(["runuser", "-u", "nobody", "--", "test", "-x", str(folder)]).returncode != 0:
        shutil.rmtree(folder)
        pytest.skip("user nobody cannot enter the checkout: the service users could not either")
    staging_port, broker_port, s3_port = free_port(), free_port(), free_port_block(8)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_USER", "S3_USER")}
    env.update(MESSY_NO_LOCAL_SH="1", MESSY_RUN_DIR=str(folder), **REDIS_PASSWORDS)
    processes: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], **extra: str) -> None:
        log = (folder / f"{Path(args[0]).stem}-{len(processes)}.log").open("w")
        processes.append(
            subprocess.Popen(
                args, cwd=ROOT, env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    try:
        for name in ("staging", "broker"):
            start(
                ["./scripts/redis.sh", name, "--save", ""],
                REDIS_URL=f"redis://127.0.0.1:{staging_port}/0",
                CELERY_BROKER_URL=f"redis://127.0.0.1:{broker_port}/0",
                REDIS_BIND="127.0.0.1",
                REDIS_DATA_DIR=str(folder / f"redis-{name}"),
            )
        start(["./scripts/memcached.sh"], MEMCACHED_SOCKET=str(folder / "memcached" / "memcached.sock"))
        start(
            ["./scripts/s3.sh"],
            S3_LOCAL_PORT=str(s3_port),
            S3_LOCAL_DATA_DIR=str(folder / "s3"),
            S3_ACCESS_KEY_ID="messy-local",
            S3_SECRET_ACCESS_KEY="data-tier-access-secret",
        )
        # local.sh as make writes it, in a checkout of its own.
        (folder / "checkout" / "scripts").mkdir(parents=True)
        shutil.copy(ROOT / "scripts" / "local-sh.sh", folder / "checkout" / "scripts")
        shutil.copy(ROOT / "local.sh.template", folder / "checkout")
        subprocess.run([str(folder / "checkout" / "scripts" / "local-sh.sh")], check=True, capture_output=True)
        (folder / "checkout").chmod(0o755)

        _wait(lambda: port_open(staging_port) and port_open(broker_port), "Redis")
        _wait(lambda: (folder / "memcached" / "memcached.sock").exists(), "memcached")

        def s3_ready() -> bool:
            # The filer and the S3 gateway come up after the master and volume servers.
            if not all(port_open(s3_port + offset) for offset in (0, 6, 7)):
                return False
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{s3_port + 2}/dir/status", timeout=1) as response:
                    return b'"Url"' in response.read()
            except OSError:
                return False

        _wait(s3_ready, "the local S3", 90)
        yield {"folder": folder, "staging": staging_port, "broker": broker_port, "s3": s3_port}
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def test_another_local_account_reaches_no_door_of_the_data_tier(data_tier) -> None:
    # Ours answer, as their users: the doors are closed to others, not broken.
    for port in (data_tier["staging"], data_tier["broker"]):
        assert redis_admin(f"redis://127.0.0.1:{port}/0").ping()

    probe = subprocess.run(
        ["runuser", "-u", "nobody", "--", SYSTEM_PYTHON, "-c", PROBE, str(data_tier["folder"]),
         str(data_tier["staging"]), str(data_tier["broker"]), str(data_tier["s3"])],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    outcomes = json.loads(probe.stdout)

    answered = {door: outcome for door, outcome in outcomes.items() if not outcome.startswith("refused")}
    assert not answered, answered
    assert len(outcomes) == 16


def test_the_services_run_as_their_own_users_and_keep_their_sockets_in_their_folders(data_tier) -> None:
    folder, s3 = data_tier["folder"], data_tier["s3"]
    owners = {path: path.owner() for path in (folder / "redis-staging", folder / "redis-broker", folder / "s3")}
    assert owners == {
        folder / "redis-staging": "messy-redis",
        folder / "redis-broker": "messy-redis",
        folder / "s3": "messy-s3",
    }
    assert (folder / "memcached" / "memcached.sock").owner() == "messy-memcached"
    assert not list(Path("/tmp").glob(f"seaweedfs-*-{s3 + 3}.sock")), "SeaweedFS's gRPC sockets are in its folder"
    assert (folder / "s3" / "tmp" / f"seaweedfs-master-grpc-{s3 + 3}.sock").exists()
    assert oct((folder / "checkout" / "local.sh").stat().st_mode & 0o777) == "0o600"
