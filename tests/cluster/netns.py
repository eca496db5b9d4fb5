"""A Messy cluster on this machine, one Linux network namespace per host: the multi-host system
test (tests/cluster/test_multihost.py) and the worker-hosts benchmark (bench/hosts.py) share it.

The network: one bridge with the root namespace on SUBNET.1 (where the test process and its load
generator sit), and every host a namespace with a veth pair into it on an address of its own.
Nothing else gets an address on SUBNET (checked before anything is made), nothing routes off it,
and no process of the cluster is told of any address but these, so no traffic leaves the
bridge. Each host also has a UTS namespace of its own, so its processes see their own host name
(Celery names a worker `ingest@<host>` and a drain's consumer `<host>:<pid>`, as on real hosts).

Everything the cluster makes is named with PREFIX: namespaces `PREFIX-<host>`, the bridge
`PREFIX-br`, the root ends of the veth pairs `PREFIX-<host>`, and one run folder
`/tmp/PREFIX-run-*`. Network.__exit__ removes it all, failure or not: it kills every process in
each namespace (`ip netns pids`: gunicorn's and Celery's children, PostgreSQL's backends too,
whoever started them), then deletes the namespaces and the bridge. A run that was itself killed
leaves them behind; the next one removes whatever carries the prefix before it builds, under a
lock (LOCK), so two runs on one machine wait for each other instead of tearing each other down.

Root only (ip netns, veth, bridge). Plain Python and the run scripts, as in tests/harness.py."""

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg2
import redis

from tests.cluster.tls import redis_tls_files
from tests.harness import SYSTEM, VENV_BIN, ProcessGroup, RunConfig, redis_admin
from tests.system.stack import PrivatePostgres

PREFIX = "mnet"
BRIDGE = f"{PREFIX}-br"
SUBNET = "10.213.77"
LOCK = Path("/run/messy-netns.lock")
RUN_DIRS = Path(tempfile.gettempdir())

WEB_PORT = 8001
FRONT_PORT = 8000
STAGING_PORT = 6380
BROKER_PORT = 6381
POSTGRES_PORT = 5432
MEMCACHED_PORT = 11211
# The S3 port inside its namespace. SeaweedFS puts Unix sockets named after its ports in /tmp,
# which every namespace shares, so this block is one no local S3 server of make run (9000) or of
# the tests (9100, random blocks from 10,000) uses; Network checks that none of its sockets exist.
S3_PORT = 9460
S3_PORTS = 8


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


def _namespaces() -> list[str]:
    listing = _ip("-j", "netns", "list", check=False).stdout.strip()
    return [entry["name"] for entry in json.loads(listing or "[]")]


def _namespace_pids(namespace: str) -> list[int]:
    return [int(pid) for pid in _ip("netns", "pids", namespace, check=False).stdout.split()]


def _kill_namespace_processes(namespace: str, timeout: float = 20) -> None:
    """SIGKILL every process whose network namespace this is, until none is left."""
    deadline = time.monotonic() + timeout
    while pids := _namespace_pids(namespace):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} of namespace {namespace} survive SIGKILL")
        time.sleep(0.05)


def leftovers_remove() -> None:
    """Remove what a run that died left: its namespaces (and every process in them), veth ends,
    bridge and run folders. Only under LOCK."""
    for namespace in _namespaces():
        if namespace.startswith(f"{PREFIX}-"):
            _kill_namespace_processes(namespace)
            _ip("netns", "del", namespace, check=False)
    links = json.loads(_ip("-j", "link", "show").stdout or "[]")
    for link in links:
        if link["ifname"].startswith(f"{PREFIX}-"):
            _ip("link", "del", link["ifname"], check=False)
    for folder in RUN_DIRS.glob(f"{PREFIX}-run-*"):
        shutil.rmtree(folder, ignore_errors=True)
    for port in range(S3_PORT, S3_PORT + S3_PORTS):
        for socket_file in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            socket_file.unlink(missing_ok=True)


def subnet_unused(subnet: str = SUBNET) -> None:
    """Fail unless no address or route of the machine touches the subnet: the cluster's
    addresses must be used by nothing else."""
    network = ipaddress.ip_network(f"{subnet}.0/24")
    for entry in json.loads(_ip("-j", "-4", "addr").stdout or "[]"):
        for address in entry.get("addr_info", []):
            interface = ipaddress.ip_interface(f"{address['local']}/{address['prefixlen']}")
            if interface.network.overlaps(network):
                raise RuntimeError(f"{network} is in use: {entry['ifname']} has {interface}")
    for route in json.loads(_ip("-j", "-4", "route", "show", "table", "all").stdout or "[]"):
        destination = route.get("dst", "default")
        if destination == "default" or "." not in destination:
            continue
        if ipaddress.ip_network(destination, strict=False).overlaps(network):
            raise RuntimeError(f"{network} is in use: a route to {destination}")


@dataclass(frozen=True)
class Host:
    """One host: a network namespace (with a UTS namespace of its own per process tree)."""

    name: str
    address: str

    @property
    def namespace(self) -> str:
        return f"{PREFIX}-{self.name}"

    @property
    def hostname(self) -> str:
        return f"messy-{self.name}"

    def command(self, args: list[str]) -> list[str]:
        """`args` run on this host: in its network namespace, under its own host name."""
        set_hostname = 'hostname "$0" && exec "$@"'
        in_namespace = ["ip", "netns", "exec", self.namespace, "unshare", "--uts"]
        return [*in_namespace, "sh", "-c", set_hostname, self.hostname, *args]

    def pids(self) -> list[int]:
        return _namespace_pids(self.namespace)

    def freeze(self) -> None:
        """SIGSTOP every process of this host: what it holds stays held until thaw() or a kill."""
        self._signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, signum: signal.Signals) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def kill_all(self) -> int:
        """kill -9 every process of this host, as a power cut would; returns how many there were."""
        count = len(self.pids())
        _kill_namespace_processes(self.namespace)
        return count


class Network:
    """The bridge and the hosts on it; a context manager that always takes it all down."""

    def __init__(self, subnet: str = SUBNET) -> None:
        self.subnet = subnet
        self.gateway = f"{subnet}.1"  # the root namespace's address on the bridge
        self.hosts: dict[str, Host] = {}
        self._lock: int | None = None
        self.run_dir = Path()

    def __enter__(self) -> "Network":
        self._lock = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # another run on this machine finishes first
        try:
            leftovers_remove()
            subnet_unused(self.subnet)
            _ip("link", "add", BRIDGE, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", BRIDGE)
            _ip("link", "set", BRIDGE, "up")
            # Readable by nginx's and PostgreSQL's unprivileged processes below it.
            self.run_dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-run-", dir=RUN_DIRS))
            self.run_dir.chmod(0o755)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def host(self, name: str, last_octet: int) -> Host:
        host = Host(name, f"{self.subnet}.{last_octet}")
        assert len(host.namespace) <= 15, "an interface name holds at most 15 characters"
        _ip("netns", "add", host.namespace)
        self.hosts[name] = host
        _ip("link", "add", host.namespace, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
        _ip("link", "set", host.namespace, "master", BRIDGE)
        _ip("link", "set", host.namespace, "up")
        _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", host.namespace, "link", "set", "eth0", "up")
        _ip("-n", host.namespace, "link", "set", "lo", "up")
        return host

    def __exit__(self, *exc: object) -> None:
        try:
            for host in self.hosts.values():
                _kill_namespace_processes(host.namespace)
            leftovers_remove()
        finally:
            if self._lock is not None:
                os.close(self._lock)  # releases the flock
                self._lock = None


# --- the services of a cluster -----------------------------------------------------------------


class Cluster(ProcessGroup):
    """Messy's processes on the hosts of a Network, started through the project's run scripts
    as operators start them, each logging to `<logs>/<name>.log`. Also a client of the cluster
    with the two methods tests/system/stack.py's checks use (db, staging_redis), so
    assert_stored_exactly_once works on it unchanged.

    Roles (`Cluster.build`): front, web1, web2, worker1..3 (beat on worker1), redis (staging
    and broker), postgres, memcached1, memcached2, s3."""

    def __init__(self, network: Network, logs: Path, *, web_hosts: int = 2, worker_hosts: int = 3) -> None:
        self.network = network
        n = network.host
        self.redis_host = n("redis", 21)
        self.postgres_host = n("postgres", 22)
        self.memcached_hosts = [n("memcached1", 23), n("memcached2", 24)]
        self.s3_host = n("s3", 25)
        self.front_host = n("front", 4) if web_hosts else None
        self.web_hosts = [n(f"web{i + 1}", 2 + i) for i in range(web_hosts)]
        self.worker_hosts = [n(f"worker{i + 1}", 11 + i) for i in range(worker_hosts)]
        # Other hosts reach both Redis servers over TLS only, as users with passwords.
        self.redis_tls = redis_tls_files(network.run_dir / "redis-tls", [self.redis_host.address, "127.0.0.1"])
        self.config: RunConfig = replace(
            SYSTEM,
            database="messy_cluster",
            bucket="messy-cluster",
            s3_endpoint=f"http://{self.s3_host.address}:{S3_PORT}",
            memcached_servers=",".join(f"{h.address}:{MEMCACHED_PORT}" for h in self.memcached_hosts),
            postgres_port=POSTGRES_PORT,
            extra={
                **SYSTEM.extra,
                "POSTGRES_HOST": self.postgres_host.address,
                "REDIS_URL": self.staging_url,
                "CELERY_BROKER_URL": f"rediss://{self.redis_host.address}:{BROKER_PORT}/0",
                "REDIS_TLS_CA_CERT_FILE": str(self.redis_tls.ca),
                # Clients reach the web hosts through the front door's host only.
                "DJANGO_ALLOWED_HOSTS": ",".join(h.address for h in [self.front_host] if h) or "127.0.0.1",
                "MESSY_TRUSTED_PROXIES": ",".join(h.address for h in [self.front_host] if h) or "127.0.0.1",
                # One client address sends the whole load: no per-client quota, backlog share or
                # idempotency budget of its own (the deployment-wide bounds still hold).
                "MESSY_QUOTA_RATE": "0",
                "MESSY_BACKLOG_CLIENT_SHARE": "1",
                "MESSY_IDEMPOTENCY_CLIENT_BYTES": str(128 * 2**20),
            },
        )
        super().__init__(self.config.env(), logs)
        self.postgres_data = network.run_dir / "postgres"

    @property
    def staging_url(self) -> str:
        return f"rediss://{self.redis_host.address}:{STAGING_PORT}/0"

    @property
    def front_url(self) -> str:
        assert self.front_host is not None
        return f"http://{self.front_host.address}:{FRONT_PORT}"

    def on(self, host: Host, name: str, args: list[str], **extra_env: str) -> None:
        self.start(name, host.command(args), **extra_env)

    # --- data tier ---

    def start_postgres(self, fsync: bool = False) -> None:
        """A PostgreSQL server of the cluster's own (initdb into the run folder; the machine's
        server is not touched), trusting the bridge's subnet, and the run's database migrated by
        the project's manage.py."""
        self.postgres_data.parent.chmod(0o755)
        self.postgres_data.mkdir(mode=0o700)
        shutil.chown(self.postgres_data, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
        initdb = [str(PrivatePostgres.BIN / "initdb"), "-D", str(self.postgres_data), "-U", "postgres"]
        subprocess.run(
            [*as_postgres, *initdb, "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        with (self.postgres_data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.network.subnet}.0/24 trust\n")
        settings = [
            f"listen_addresses={self.postgres_host.address}",
            f"port={POSTGRES_PORT}",
            f"unix_socket_directories={self.postgres_data}",
            f"fsync={'on' if fsync else 'off'}",
            "max_connections=200",
        ]
        args = [*as_postgres, str(PrivatePostgres.BIN / "postgres"), "-D", str(self.postgres_data)]
        self.on(self.postgres_host, "postgres", [*args, *(arg for s in settings for arg in ("-c", s))])
        self._wait(self._postgres_answers, "PostgreSQL", 60)
        admin = self._postgres("postgres")
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{self.config.database}"')
        admin.close()
        subprocess.run(
            [str(VENV_BIN / "python"), "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=Path(__file__).resolve().parents[2],
            env=self.env,
            check=True,
            timeout=300,
        )

    def _postgres(self, database: str) -> psycopg2.extensions.connection:
        connection = psycopg2.connect(
            host=self.postgres_host.address, port=POSTGRES_PORT, user="postgres", dbname=database, connect_timeout=5
        )
        connection.autocommit = True
        return connection

    def _postgres_answers(self) -> bool:
        try:
            self._postgres("postgres").close()
        except psycopg2.OperationalError:
            return False
        return True

    def start_redis(self) -> None:
        """The staging Redis and the broker: scripts/redis.sh with deploy/redis.conf (append-only
        file, noeviction) and its users, listening on the host's bridge address with TLS only
        (the test's own CA), as a production host for other hosts would."""
        for name, port in (("staging", STAGING_PORT), ("broker", BROKER_PORT)):
            self.on(
                self.redis_host,
                f"redis-{name}",
                ["./scripts/redis.sh", name],
                REDIS_URL=self.staging_url,
                CELERY_BROKER_URL=self.env["CELERY_BROKER_URL"],
                REDIS_BIND=f"{self.redis_host.address} 127.0.0.1",
                REDIS_DATA_DIR=str(self.network.run_dir / f"redis-{name}"),
                **self.redis_tls.server_env(),
            )
            self._wait_port(self.redis_host.address, port)

    def start_memcached(self) -> None:
        for i, host in enumerate(self.memcached_hosts, 1):
            args = ["memcached", "-u", "nobody", "-l", host.address, "-p", str(MEMCACHED_PORT), "-m", "64"]
            self.on(host, f"memcached{i}", args)
            self._wait_port(host.address, MEMCACHED_PORT)

    def start_s3(self) -> None:
        """The local S3 store (scripts/s3.sh: SeaweedFS), its servers on the host's bridge
        address instead of the script's 127.0.0.1 (later flags win), data in the run folder."""
        address = self.s3_host.address
        self.on(
            self.s3_host,
            "s3",
            ["./scripts/s3.sh", f"-ip={address}", f"-ip.bind={address}"],
            S3_LOCAL_PORT=str(S3_PORT),
            S3_LOCAL_DATA_DIR=str(self.network.run_dir / "s3"),
        )

        def ready() -> bool:
            try:
                status = f"http://{address}:{S3_PORT + 2}/dir/status"
                with urllib.request.urlopen(status, timeout=1) as response:
                    return b'"Url"' in response.read() and self._port_open(address, S3_PORT)
            except OSError:
                return False

        self._wait(ready, "the S3 store", 60)

    def start_data_tier(self, postgres_fsync: bool = False) -> None:
        self.start_redis()
        self.start_memcached()
        self.start_s3()
        self.start_postgres(fsync=postgres_fsync)

    # --- Messy's own processes ---

    def start_web(self, host: Host, processes: int = 2) -> None:
        bind = f"{host.address}:{WEB_PORT}"
        # The front door is on another host: no Unix socket (two web hosts share this file system).
        self.on(host, host.name, ["./runserver.sh"], MESSY_BIND=bind, WEB_PROCESSES=str(processes), MESSY_SOCKET="off")
        self._wait_port(host.address, WEB_PORT, 60)

    def start_worker(self, host: Host, concurrency: int = 2) -> None:
        self.on(host, host.name, ["./runworker.sh", "ingest"], WORKER_INGEST_CONCURRENCY=str(concurrency))

    def wait_workers_ready(self, hosts: list[Host], timeout: float = 60) -> None:
        """Until each host's worker logged Celery's ready line (it consumes from then on)."""
        self._wait(lambda: all("ready." in self.log(h.name) for h in hosts), "the workers", timeout)

    def start_beat(self, host: Host) -> None:
        self.on(host, f"beat-{host.name}", ["./runbeat.sh"])

    def start_front(self) -> None:
        """The front door (scripts/front.sh: nginx) on its host, its upstream every web host."""
        assert self.front_host is not None
        run_dir = self.network.run_dir / "nginx"
        run_dir.mkdir(mode=0o755)
        self.on(
            self.front_host,
            "front",
            ["./scripts/front.sh"],
            FRONT_BIND=f"{self.front_host.address}:{FRONT_PORT}",
            FRONT_UPSTREAMS=",".join(f"{h.address}:{WEB_PORT}" for h in self.web_hosts),
            FRONT_RUN_DIR=str(run_dir),
            FRONT_ACCESS_LOG="off",
            FRONT_ERROR_LOG=str(self.logs / "front-error.log") if self.logs else "/dev/stderr",
            # One client address sends the whole load.
            FRONT_RATE_PER_IP="100000",
            FRONT_BURST_PER_IP="100000",
        )
        self._wait_port(self.front_host.address, FRONT_PORT)

    def close(self) -> None:
        """kill -9 everything on every host (the cluster's data is thrown away with it): quicker
        than a warm shutdown of each process, and what Network.__exit__ would do anyway."""
        for host in self.network.hosts.values():
            host.kill_all()
        for process in self.processes.values():
            process.popen.wait(10)
        self.processes.clear()

    def kill_host(self, host: Host) -> int:
        """kill -9 every process of the host; returns how many there were."""
        killed = host.kill_all()
        for name, process in list(self.processes.items()):
            if process.popen.poll() is not None or name in (host.name, f"beat-{host.name}"):
                process.popen.wait(10)
                self.processes.pop(name)
        return killed

    # --- the checks' side (tests/system/stack.py's Stack offers the same two) ---

    def db(self) -> psycopg2.extensions.connection:
        return self._postgres(self.config.database)

    def staging_redis(self) -> redis.Redis:
        return redis_admin(self.staging_url, socket_timeout=10, ssl_ca_certs=str(self.redis_tls.ca))

    # --- waiting ---

    @staticmethod
    def _port_open(address: str, port: int) -> bool:
        import socket

        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((address, port)) == 0

    def _wait_port(self, address: str, port: int, timeout: float = 30) -> None:
        self._wait(lambda: self._port_open(address, port), f"{address}:{port}", timeout)

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            exited = [name for name, p in self.processes.items() if p.popen.poll() is not None]
            if exited:
                raise RuntimeError(f"{', '.join(exited)} exited while waiting for {what} (logs: {self.logs})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready after {timeout}s (logs: {self.logs})")
            time.sleep(0.1)


@contextlib.contextmanager
def cluster_running(logs: Path, *, postgres_fsync: bool = False, **sizes: int) -> Iterator[Cluster]:
    """A Network and a Cluster on it with the data tier up; everything is stopped and removed
    on the way out, whatever happened."""
    logs.mkdir(parents=True, exist_ok=True)
    with Network() as network:
        cluster = Cluster(network, logs, **sizes)
        try:
            cluster.start_data_tier(postgres_fsync=postgres_fsync)
            yield cluster
        finally:
            cluster.close()
