"""The one harness the system tests, the stats and jobs tests and the benchmarks share: the
environment of an isolated run, its database and Redis, Messy's processes started through the
run scripts as operators start them, the local S3 server, free ports, and the table reset.

Plain Python on purpose (no pytest, no Django settings at import), so `bench/` uses it too:
`from tests.harness import BENCH, ProcessGroup, ...`.

Where runs keep their state is said once, in the RunConfig constants below. Redis is found
through MESSY_TEST_REDIS_STAGING and MESSY_TEST_REDIS_BROKER (server URLs without a database
number, default the machine's Redis), so pointing every run at other Redis servers is one
change of environment."""

import contextlib
import functools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import redis

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
REDIS_STAGING_SERVER = os.environ.get("MESSY_TEST_REDIS_STAGING", "redis://127.0.0.1:6379").rstrip("/")
# The same server's Unix socket (scripts/redis-pair.sh sets it): Messy's processes use it, as on
# make run's host.
REDIS_STAGING_SOCKET = os.environ.get("MESSY_TEST_REDIS_STAGING_SOCKET", "")
REDIS_BROKER_SERVER = os.environ.get("MESSY_TEST_REDIS_BROKER", "redis://127.0.0.1:6379").rstrip("/")
# The users' passwords of those servers (scripts/redis-pair.sh makes them up for the run): each
# process of a run connects as its role (runserver.sh: web, the others: worker), the tests'
# own resets and inspections as the admin.
REDIS_PASSWORDS = {
    name: os.environ.get(name, "") for name in ("REDIS_WEB_PASSWORD", "REDIS_WORKER_PASSWORD", "REDIS_ADMIN_PASSWORD")
}
# Whom the Redis servers the tests start run as (scripts/test.sh: this user, their data being in
# temporary folders a service user could not enter).
REDIS_SERVER_USER = {"REDIS_USER": os.environ["REDIS_USER"]} if os.environ.get("REDIS_USER") else {}


def redis_user_url(url: str, role: str = "worker") -> str:
    """`url` with the credentials of the Redis user of a role (web, worker, admin) of the run."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    password = REDIS_PASSWORDS[f"REDIS_{role.upper()}_PASSWORD"]
    if password:
        netloc = f"messy-{role}:{urllib.parse.quote(password, safe='')}@{netloc}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def redis_admin(url: str, **options: Any) -> redis.Redis:
    """A client of the server `url` names (any credentials in it replaced) as messy-admin: it
    may flush, kill clients and read every key, as no role of Messy's own may. RESP2 unless asked
    otherwise, as project.redis speaks it."""
    return redis.Redis.from_url(redis_user_url(url, "admin"), **{"protocol": 2, **options})


# Nothing listens on port 1: a run that must not reach an S3 server fails at once there.
S3_UNREACHABLE = "http://127.0.0.1:1"
# The identity every local S3 server of the tests and benchmarks lets in (scripts/s3.sh), as
# local.sh.template's local development S3 block has it.
S3_LOCAL_ACCESS_KEY_ID = "messy-local"
S3_LOCAL_SECRET_ACCESS_KEY = "messy-local-secret"

# Variables the parent's environment may set that would leak another namespace or another
# server into an isolated run; run_env drops them and sets its own.
_NOT_INHERITED = ("DJANGO_", "POSTGRES_", "REDIS_", "CELERY_", "MEMCACHED_", "S3_", "MESSY_", "WEB_", "WORKER_")


# --- ports ---------------------------------------------------------------------------------


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_block(count: int) -> int:
    """The first of `count` consecutive ports that are all free now, below the kernel's range
    of ephemeral ports: a server whose processes connect to each other while they start (the
    local S3 server) would otherwise find a port of its block taken by one of its own outgoing
    connections."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        first = random.randrange(10_000, low - count)
        if all(_port_free(port) for port in range(first, first + count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports found")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class SlowUploads:
    """`count` slow clients of 127.0.0.1:`port`: each sends a write's headers and the start of
    its body, then one more byte every few seconds (a phone on a bad network, or slowloris).
    A server that reads bodies in its own processes waits on each of them; the front door
    reads them and passes on only complete requests. The trickle stays under nginx's 10 s
    client_body_timeout, so they stay connected for as long as the context lasts."""

    HEADERS = (
        b"POST /message/write/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 200\r\n\r\n{"username": '
    )

    def __init__(self, port: int, count: int, every_seconds: float = 4.0) -> None:
        self.port, self.count, self.every_seconds = port, count, every_seconds
        self.clients: list[socket.socket] = []
        self._done = threading.Event()
        self._trickle = threading.Thread(target=self._trickle_bytes, daemon=True)

    def __enter__(self) -> "SlowUploads":
        for _ in range(self.count):
            client = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            client.sendall(self.HEADERS)
            self.clients.append(client)
        self._trickle.start()
        return self

    def _trickle_bytes(self) -> None:
        while not self._done.wait(self.every_seconds):
            for client in self.clients:
                with contextlib.suppress(OSError):
                    client.sendall(b" ")

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._trickle.join()
        for client in self.clients:
            client.close()


# --- the environment of an isolated run ------------------------------------------------------


@dataclass(frozen=True)
class RunConfig:
    """Where one isolated run keeps its state: a database, two Redis databases (the staging
    stream on `redis_db`, the Celery broker on the one after it), a key prefix for Redis and
    memcached, and an S3 bucket. `extra` are settings the run wants on top (LOG_LEVEL, ...)."""

    database: str
    redis_db: int
    key_prefix: str
    bucket: str
    s3_endpoint: str = S3_UNREACHABLE
    memcached_servers: str = "127.0.0.1:11211"
    postgres_port: int = 5432
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def staging_url(self) -> str:
        if REDIS_STAGING_SOCKET:
            return f"unix://{REDIS_STAGING_SOCKET}?db={self.redis_db}"
        return f"{REDIS_STAGING_SERVER}/{self.redis_db}"

    @property
    def broker_url(self) -> str:
        return f"{REDIS_BROKER_SERVER}/{self.redis_db + 1}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process of this run: the parent's, minus every Messy, Django
        and service variable, plus this run's (local.sh ignored: the run brings its own)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)}
        env.update(
            MESSY_NO_LOCAL_SH="1",
            DJANGO_SETTINGS_MODULE="project.settings",
            DJANGO_SECRET_KEY="harness-only-not-a-secret",
            POSTGRES_DB=self.database,
            POSTGRES_USER="postgres",  # the runs migrate databases of their own from scratch
            POSTGRES_PORT=str(self.postgres_port),
            REDIS_URL=self.staging_url,
            CELERY_BROKER_URL=self.broker_url,
            REDIS_KEY_PREFIX=self.key_prefix,
            **REDIS_PASSWORDS,
            **REDIS_SERVER_USER,
            MEMCACHED_SERVERS=self.memcached_servers,
            MEMCACHED_KEY_PREFIX=self.key_prefix,
            S3_ENDPOINT_URL=self.s3_endpoint,
            S3_ACCESS_KEY_ID=S3_LOCAL_ACCESS_KEY_ID,
            S3_SECRET_ACCESS_KEY=S3_LOCAL_SECRET_ACCESS_KEY,
            S3_BUCKET=self.bucket,
            S3_BUCKET_CREATE="1",
            S3_BUCKET_CORS_MANAGE="1",
            WEB_ACCESS_LOG="off",
            PYTHONUNBUFFERED="1",
            PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        )
        env.update(self.extra)
        env.update(extra)
        return env


# Every isolated run, in one place: two runs that must not meet differ in database, Redis
# databases and prefix here. (The unit tests' namespace is project/settings_test.py's.) Two
# runs of the system tests at once (two checkouts on one machine) must not share a database
# or Redis databases: each resets them; the second sets MESSY_SYSTEM_DB and MESSY_SYSTEM_REDIS_DB.
SYSTEM = RunConfig(
    database=os.environ.get("MESSY_SYSTEM_DB", "messy_system_test"),
    redis_db=int(os.environ.get("MESSY_SYSTEM_REDIS_DB", "8")),
    key_prefix="messy-sys",
    bucket="messy-system-test",
    extra={
        # Fast recovery, so a test sees a dead worker's batch taken over within seconds.
        "MESSY_DRAIN_RECLAIM_IDLE_MS": "3000",
        "MESSY_DRAIN_SLOT_TTL": "4",
        "MESSY_DRAIN_BATCH_SIZE": "500",
        "LOG_LEVEL": "INFO",
    },
)
BENCH = RunConfig(
    database="messy_bench",
    redis_db=6,
    key_prefix="messy-bench",
    bucket="messy-bench-stats",
    # No backpressure: the benchmark stages far more than a deployment's bound, with no worker.
    extra={
        "MESSY_BENCH_ENDPOINTS": "1",
        "MESSY_BACKLOG_MAX": "100000000",
        "MESSY_BACKLOG_MAX_BYTES": str(16 * 2**30),
        "LOG_LEVEL": "WARNING",
    },
)


# --- database and Redis ------------------------------------------------------------------------


def _admin_sql(statement: str, port: int) -> None:
    admin = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=5)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(statement)
    admin.close()


def database_create(config: RunConfig) -> None:
    """The run's database, dropped and made again, migrated by the project's own manage.py
    (schedules and seed rows included, as a deploy has them)."""
    database_drop(config)
    _admin_sql(f'CREATE DATABASE "{config.database}"', config.postgres_port)
    subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=config.env(),
        check=True,
        timeout=300,
    )


def database_drop(config: RunConfig) -> None:
    _admin_sql(f'DROP DATABASE IF EXISTS "{config.database}" WITH (FORCE)', config.postgres_port)


def db_connect(config: RunConfig) -> psycopg2.extensions.connection:
    """An autocommit connection to the run's database."""
    connection = psycopg2.connect(
        host="127.0.0.1", port=config.postgres_port, user="postgres", dbname=config.database, connect_timeout=5
    )
    connection.autocommit = True
    return connection


def redis_reset(config: RunConfig) -> None:
    """Empty the run's staging and broker databases."""
    for url in (config.staging_url, config.broker_url):
        redis_admin(url).flushdb()


def project_tables() -> list[str]:
    """Every table of the project's own apps (the apps whose code is in this repository):
    their models and many-to-many tables, read from Django's model registry, so a new model is
    reset without anyone listing it. Django's and django_celery_beat's tables (users, the
    schedules the migrations made) are not among them.

    In a process without Django (the benchmark's driver) a child process reads the registry."""
    from django.apps import apps

    if not apps.ready:
        return _project_tables_from_child()
    return sorted(
        model._meta.db_table
        for config in project_apps()
        for model in config.get_models(include_auto_created=True)
        if model._meta.managed and not model._meta.proxy
    )


def project_apps() -> list[Any]:
    """The installed Django apps whose code is in this repository (not Django's, not a
    package's)."""
    from django.apps import apps

    return [config for config in apps.get_app_configs() if Path(config.path).parent == ROOT]


@functools.cache
def _project_tables_from_child() -> list[str]:
    script = (
        "import django, json; django.setup(); from tests.harness import project_tables as t; print(json.dumps(t()))"
    )
    output = subprocess.run(
        [str(VENV_BIN / "python"), "-c", script],
        cwd=ROOT,
        env=RunConfig(database="unused", redis_db=0, key_prefix="unused", bucket="unused").env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def tables_truncate_sql() -> str:
    return "TRUNCATE " + ", ".join(f'"{table}"' for table in project_tables())


def tables_reset(config: RunConfig) -> None:
    """Empty every table of the project's apps in the run's database (see project_tables)."""
    connection = db_connect(config)
    with connection.cursor() as cursor:
        cursor.execute(tables_truncate_sql())
    connection.close()


# --- processes -----------------------------------------------------------------------------------


class Process:
    """One command in a process group of its own, so kill -9 takes its children too (a
    gunicorn's or a Celery worker's pool), as a machine failure would."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path | None) -> None:
        self.log = log
        out = log.open("ab") if log else None
        try:
            self.popen = subprocess.Popen(
                args,
                cwd=ROOT,
                env=env,
                stdout=out or subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if out:
                out.close()  # the child has its own copy

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill9(self) -> None:
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(30)

    def freeze(self) -> None:
        """SIGSTOP the whole group: a test looks at what it holds, and then kills it holding
        exactly that (a running process could finish its batch in between)."""
        os.killpg(self.popen.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.killpg(self.popen.pid, signal.SIGCONT)

    def stop(self, timeout: float = 15) -> None:
        """TERM (a warm shutdown for Celery and gunicorn), then KILL if it lingers."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()


class ProcessGroup:
    """Messy's processes of one run, started through the run scripts with `env`, each logging
    to `<logs>/<name>.log` (or nowhere when logs is None). stop_all() ends every one left."""

    def __init__(self, env: dict[str, str], logs: Path | None = None) -> None:
        self.env = env
        self.logs = logs
        self.processes: dict[str, Process] = {}
        # Each web server's Unix socket (runserver.sh's MESSY_SOCKET), where a front door
        # started with through_socket reaches it, as make run's does.
        self.sockets: dict[str, Path] = {}

    def start(self, name: str, args: list[str], **extra_env: str) -> Process:
        assert name not in self.processes, f"{name} is started already"
        log = self.logs / f"{name}.log" if self.logs else None
        process = Process(args, {**self.env, **extra_env}, log)
        self.processes[name] = process
        return process

    def web(self, port: int, processes: int = 2, name: str = "web", **extra_env: str) -> Process:
        """./runserver.sh (gunicorn) on 127.0.0.1:port and on a Unix socket of its own
        (self.sockets[name]), once it listens."""
        if "MESSY_SOCKET" not in extra_env:
            folder = Path(tempfile.mkdtemp(prefix="messy-web-"))
            folder.chmod(0o755)  # nginx's workers (nobody) connect to the socket in it
            self.sockets[name] = folder / "web.sock"
            extra_env["MESSY_SOCKET"] = str(self.sockets[name])
        process = self.start(
            name, ["./runserver.sh"], MESSY_BIND=f"127.0.0.1:{port}", WEB_PROCESSES=str(processes), **extra_env
        )
        wait_for_port(port, timeout=30)
        return process

    def worker(
        self, name: str = "worker", role: str = "ingest", concurrency: int | None = None, **extra_env: str
    ) -> Process:
        """./runworker.sh ROLE: "ingest" (ingest and stats queues), "jobs" or "all", with
        `concurrency` pool processes per pool (None: the script's default)."""
        sizes = {}
        if concurrency is not None:
            sizes = {"WORKER_INGEST_CONCURRENCY": str(concurrency), "WORKER_JOBS_CONCURRENCY": str(concurrency)}
        return self.start(name, ["./runworker.sh", role], **{**sizes, **extra_env})

    def beat(self, name: str = "beat", **extra_env: str) -> Process:
        return self.start(name, ["./runbeat.sh"], **extra_env)

    def front(
        self,
        port: int,
        upstream_port: int,
        run_dir: Path,
        name: str = "front",
        through_socket: Path | None = None,
        **extra_env: str,
    ) -> Process:
        """./scripts/front.sh (nginx) on 127.0.0.1:port in front of the web server on
        upstream_port, or on its Unix socket `through_socket` (as make run connects them),
        keeping its config and temporary files in run_dir, once it listens. Access log off
        unless extra_env sets FRONT_ACCESS_LOG."""
        run_dir.mkdir(parents=True, exist_ok=True)
        run_dir.chmod(0o755)  # nginx's workers (nobody) keep request bodies in folders there
        env = {"FRONT_ACCESS_LOG": "off", **extra_env}
        process = self.start(
            name,
            ["./scripts/front.sh"],
            FRONT_BIND=f"127.0.0.1:{port}",
            FRONT_UPSTREAMS=f"unix:{through_socket}" if through_socket else f"127.0.0.1:{upstream_port}",
            FRONT_RUN_DIR=str(run_dir),
            **env,
        )
        wait_for_port(port)
        return process

    def memcached(self, port: int, name: str = "memcached") -> Process:
        """A private memcached, so a test may kill and restart it."""
        process = self.start(name, ["memcached", "-u", "nobody", "-l", "127.0.0.1", "-p", str(port)])
        wait_for_port(port)
        return process

    def memcached_on_socket(self, socket_path: Path, name: str = "memcached") -> Process:
        """make run's memcached (scripts/memcached.sh) on the Unix socket `socket_path`, once it
        answers there; processes started afterwards with MEMCACHED_SERVERS=unix:<path> use it."""
        process = self.start(name, ["./scripts/memcached.sh"], MEMCACHED_SOCKET=str(socket_path))
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(socket_path))
                return process
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"memcached does not answer on {socket_path}") from None
                time.sleep(0.05)

    def log(self, name: str) -> str:
        assert self.logs is not None
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        """kill -9 the process and everything it forked."""
        self.processes.pop(name).kill9()

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.popen.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        while self.processes:
            _, process = self.processes.popitem()
            process.stop()
        while self.sockets:
            _, socket_path = self.sockets.popitem()
            shutil.rmtree(socket_path.parent, ignore_errors=True)


# --- the local S3 server -------------------------------------------------------------------------


class S3Server:
    """The local S3-compatible server, on 127.0.0.1:port, started as make run starts it
    (scripts/s3.sh: SeaweedFS, persistent, signed requests only, CORS from the bucket's rules
    only, as AWS does). The script takes the seven ports after `port` for SeaweedFS's own
    servers, so a server started without a port gets a free block of eight.

    Its data lives in `data_dir`, by default a temporary folder made at the first start: stop()
    keeps it, so a test that starts the server again finds its buckets and objects there;
    close() stops the server and removes a folder it made."""

    PORTS = 8  # scripts/s3.sh: the S3 port and the seven after it

    def __init__(self, port: int | None = None, data_dir: Path | None = None) -> None:
        self.port = port or free_port_block(self.PORTS)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self._own_data_dir = data_dir is None
        self.process: subprocess.Popen[bytes] | None = None

    def _command(self) -> tuple[list[str], dict[str, str]]:
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="messy-s3-"))
        env = {
            "MESSY_NO_LOCAL_SH": "1",
            "S3_LOCAL_PORT": str(self.port),
            "S3_LOCAL_DATA_DIR": str(self.data_dir),
            "S3_ACCESS_KEY_ID": S3_LOCAL_ACCESS_KEY_ID,
            "S3_SECRET_ACCESS_KEY": S3_LOCAL_SECRET_ACCESS_KEY,
        }
        return [str(ROOT / "scripts" / "s3.sh")], env

    def start(self, timeout: float = 60.0) -> "S3Server":
        """Start it and return once it serves: the S3 port listens and SeaweedFS's master knows
        its volume server (before that, a bucket cannot take its first object)."""
        args, env = self._command()
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not (port_open(self.port) and self._volume_server_registered()):
            if (returncode := self.process.poll()) is not None:
                self.close()
                raise RuntimeError(f"scripts/s3.sh on port {self.port} exited with {returncode}")
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError(f"the local S3 server on port {self.port} is not ready after {timeout}s")
            time.sleep(0.05)
        return self

    def _volume_server_registered(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port + 2}/dir/status", timeout=1) as response:
                return b'"Url"' in response.read()
        except OSError:
            return False

    def stop(self) -> None:
        """Stop it, keeping its data. TERM first; SeaweedFS's filer then waits up to 15 s for
        its subscribers, so KILL after a moment: every write has reached the files by then
        (nothing is buffered in the process), so a restart finds it all."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):  # it may have exited already
                os.killpg(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(1)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            self.process = None
            # The Unix sockets SeaweedFS opens next to its ports outlive a killed server.
            for port in range(self.port, self.port + self.PORTS):
                for socket_file in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                    socket_file.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop it and remove its data folder if it made it."""
        self.stop()
        if self._own_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
