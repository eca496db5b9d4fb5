"""Staging on a Redis Cluster: three masters with a replica each (redis-server in cluster mode,
append-only file on, started here under a temporary directory on free 127.0.0.1 ports), the
backlog in three stream shards, writes through a real web process, real workers draining.
Under load one master is killed with -9 and its replica promoted.

What the service promises there, and what this checks: with MESSY_STAGING_WAIT_REPLICAS=1 a
write is answered 202 only after the shard master's replica holds it (WAIT in the same round
trip as the stage script). Redis replicates asynchronously, so a master killed may take writes
with it that its replica never got; those writes were never answered 202. Redis Cluster promotes
a replica of the failed master; with one replica per master that is the one WAIT counted. So
every 202 is stored exactly once, and a write answered otherwise (503 while the shard fails
over, or a 503 because its replica did not confirm in time) may or may not be stored, but at
most once, since no request here is retried.
"""

import concurrent.futures
import http.client
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from messages.staging import shard_tag
from tests import harness
from tests.cluster.tls import redis_tls_files
from tests.harness import Process, free_port_block, wait_for_port
from tests.system.stack import Stack, assert_rollups_match, wait_until_stored

pytestmark = pytest.mark.system

SHARDS = 3
ADDRESSES = [f"198.51.100.{i}" for i in range(1, 31)]  # client addresses (X-Forwarded-For)


class LocalCluster:
    """Six redis-server processes in cluster mode (three masters, three replicas) in a temporary
    directory; `redis-cli --cluster create` joins them. Everything goes in stop()."""

    def __init__(self, logs: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="messy-redis-cluster-"))
        self.logs = logs
        first = free_port_block(12)
        self.ports = list(range(first, first + 6))  # clients; cluster bus on the next six
        self.processes: dict[int, Process] = {}
        # As across hosts: TLS only (clients and the cluster bus), the project's users
        # (scripts/redis-users.sh), replicas authenticating to their masters.
        self.tls = redis_tls_files(self.root / "tls", ["127.0.0.1"])
        self.users = self.root / "users.conf"
        self.users.write_text(
            subprocess.run(
                [str(harness.ROOT / "scripts" / "redis-users.sh"), "staging"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        self.admin = ["messy-admin", harness.REDIS_PASSWORDS["REDIS_ADMIN_PASSWORD"]]

    def _start(self, port: int) -> None:
        directory = self.root / str(port)
        directory.mkdir(exist_ok=True)
        config = directory / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "port 0",
                    f"tls-port {port}",
                    f"cluster-port {port + 6}",
                    f"tls-cert-file {self.tls.cert}",
                    f"tls-key-file {self.tls.key}",
                    f"tls-ca-cert-file {self.tls.ca}",
                    "tls-auth-clients optional",
                    "tls-replication yes",
                    "tls-cluster yes",
                    f"include {self.users}",
                    f"masteruser {self.admin[0]}",
                    f"masterauth {self.admin[1]}",
                    "bind 127.0.0.1",
                    "protected-mode yes",
                    f"dir {directory}",
                    "cluster-enabled yes",
                    "cluster-config-file nodes.conf",
                    # A failed master is noticed within a second and its replica promoted.
                    "cluster-node-timeout 1000",
                    # The other masters' slots keep answering while one fails over.
                    "cluster-require-full-coverage no",
                    # As deploy/redis.conf: durable across a restart, never evicting.
                    "appendonly yes",
                    "appendfsync everysec",
                    'save ""',
                    "maxmemory 256mb",
                    "maxmemory-policy noeviction",
                    f"logfile {directory / 'server.log'}",
                ]
            )
            + "\n"
        )
        self.processes[port] = Process(["redis-server", str(config)], {}, None)
        wait_for_port(port)

    def start(self) -> None:
        for port in self.ports:
            self._start(port)
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            [*self.cli(), "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_ready()

    def cli(self) -> list[str]:
        """redis-cli as the admin, over TLS."""
        user, password = self.admin
        return [
            "redis-cli",
            "--tls",
            "--cacert",
            str(self.tls.ca),
            "--user",
            user,
            "--pass",
            password,
            "--no-auth-warning",
        ]

    def client(self, port: int) -> redis.Redis:
        """A client of one node, as the admin, in RESP2 as project.redis speaks it: _slot_map reads
        CLUSTER SHARDS as flat lists."""
        return harness.redis_admin(
            f"rediss://127.0.0.1:{port}/0", socket_timeout=2, socket_connect_timeout=2, ssl_ca_certs=str(self.tls.ca)
        )

    def alive(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.popen.poll() is None]

    def wait_ready(self, timeout: float = 30, in_sync: bool = True) -> None:
        """Until every live node says the cluster is ok, every slot has a live master, and
        (in_sync) every master has a replica in sync (WAIT 1 would time out before)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                states = [self.client(p).execute_command("CLUSTER", "INFO") for p in self.alive()]
                ok = all(b"cluster_state:ok" in state for state in states) and self._covered()
                if ok and (not in_sync or self._in_sync()):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.2)
        raise TimeoutError("the Redis Cluster did not become ready")

    def _slot_map(self) -> list[tuple[int, int, int, list[int]]]:
        raw = self.client(self.alive()[0]).execute_command("CLUSTER", "SHARDS")
        ranges = []
        for shard in raw:
            fields = dict(zip(shard[::2], shard[1::2], strict=True))
            slots = fields[b"slots"]
            nodes = [dict(zip(n[::2], n[1::2], strict=True)) for n in fields[b"nodes"]]
            # Nodes on TLS name their port tls-port.
            master = [int(n[b"tls-port"]) for n in nodes if n[b"role"] == b"master" and n[b"health"] == b"online"]
            replicas = [int(n[b"tls-port"]) for n in nodes if n[b"role"] == b"replica" and n[b"health"] == b"online"]
            for low, high in zip(slots[::2], slots[1::2], strict=True):
                ranges.append((int(low), int(high), master[0] if master else 0, replicas))
        return ranges

    def _in_sync(self) -> bool:
        for master in {master for _, _, master, _ in self._slot_map()}:
            info = self.client(master).info("replication")
            replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            if not any(replica.get("state") == "online" for replica in replicas):
                return False
        return True

    def _covered(self) -> bool:
        ranges = self._slot_map()
        return sum(high - low + 1 for low, high, master, _ in ranges if master in self.alive()) == 16384

    def master_of(self, slot: int) -> tuple[int, list[int]]:
        for low, high, master, replicas in self._slot_map():
            if low <= slot <= high:
                return master, replicas
        raise LookupError(slot)

    def kill9(self, port: int) -> None:
        self.processes[port].kill9()

    def restart(self, port: int) -> None:
        """Start a killed node again from its own directory: it rejoins as a replica."""
        self._start(port)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.popen.poll() is None:
                process.kill9()
        for port in self.ports:
            log = self.root / str(port) / "server.log"
            if log.exists():
                shutil.copy(log, self.logs / f"redis-{port}.log")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def redis_cluster(request, artifacts_dir) -> Iterator[LocalCluster]:
    logs = artifacts_dir / "cluster" / re.sub(r"\W+", "-", request.node.name)
    logs.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(logs)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_stack(request, redis_cluster, s3_server, artifacts_dir) -> Iterator[Stack]:
    """The system tests' processes (a database of their own, the broker on the plain test
    Redis), with staging on the cluster in three shards, a 202 only once a replica has it."""
    harness.database_create(harness.SYSTEM)
    harness.redis_reset(harness.SYSTEM)
    logs = artifacts_dir / "cluster" / re.sub(r"\W+", "-", request.node.name)
    stack = Stack(logs=logs, s3_endpoint=s3_server)
    stack.env = {
        **stack.env,
        "REDIS_URL": f"rediss://127.0.0.1:{redis_cluster.ports[0]}/0",
        "REDIS_TLS_CA_CERT_FILE": str(redis_cluster.tls.ca),
        "MESSY_REDIS_CLUSTER": "1",
        "MESSY_STAGING_SHARDS": str(SHARDS),
        "MESSY_STAGING_WAIT_REPLICAS": "1",
        "MESSY_STAGING_WAIT_TIMEOUT_MS": "1000",
        "REDIS_TIMEOUT": "1",
    }
    stack.start_memcached()
    try:
        yield stack
    finally:
        stack.stop_all()


def shard_slot(index: int) -> int:
    return key_slot(shard_tag(index, SHARDS).encode())


def shard_of(address: str) -> int:
    import zlib

    return zlib.crc32(address.encode()) % SHARDS


def post(stack: Stack, path: str, body: object, address: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", stack.web_port, timeout=30)
    try:
        headers = {"Content-Type": "application/json", "X-Forwarded-For": address}
        connection.request("POST", path, json.dumps(body), headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    except (OSError, http.client.HTTPException):
        return 0, {}
    finally:
        connection.close()


def message(request: int, item: int) -> dict[str, str]:
    # The text names the request and item: a stored row tells which request it came from.
    return {
        "username": f"user{request % 23}",
        "city": f"city{item % 7}",
        "state": f"S{request % 5}",
        "message": f"r{request}i{item}",
    }


class Load:
    """Single writes and batches of 50 from 30 client addresses (spread over the shards), on 8
    threads; remembers what was answered 202 and what was sent."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.accepted: dict[str, str] = {}  # id -> message text
        self.statuses: dict[int, int] = {}
        self.sent: set[str] = set()
        self.lock = threading.Lock()

    def request(self, number: int) -> None:
        address = ADDRESSES[number % len(ADDRESSES)]
        items = [message(number, i) for i in range(50 if number % 10 == 0 else 1)]
        with self.lock:
            self.sent.update(item["message"] for item in items)
        if len(items) == 1:
            status, body = post(self.stack, "/message/write/", items[0], address)
            results = [body] if status == 202 else []
        else:
            status, body = post(self.stack, "/message/batch/", items, address)
            results = body.get("results", []) if status == 202 else []
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            for item, result in zip(items, results, strict=False):
                if result.get("id"):
                    self.accepted[result["id"]] = item["message"]

    def run(self, requests: range, threads: int = 8) -> None:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(self.request, requests))


def test_a_master_killed_under_load_loses_no_acknowledged_write_and_stores_none_twice(redis_cluster, cluster_stack):
    stack = cluster_stack
    started = time.monotonic()
    stack.start_web(processes=2)
    stack.worker("ingest-1", role="ingest", concurrency=2)
    stack.worker("ingest-2", role="ingest", concurrency=2)
    stack.start_beat()
    assert stack.get("/readyz") == (200, {"status": "ready", "checks": {"redis": "ok"}})
    load = Load(stack)

    load.run(range(0, 1500))  # before the fault
    victim_shard = 1
    victim, replicas = redis_cluster.master_of(shard_slot(victim_shard))
    assert victim != redis_cluster.ports[0] and replicas  # not the seed node of REDIS_URL
    fault_at = time.monotonic()
    failover: dict[str, float] = {}
    fault_error: list[str] = []

    def fault() -> None:
        try:
            failover_run()
        except Exception as exc:  # surfaced after the load, instead of a load that never ends
            fault_error.append(repr(exc))

    def failover_run() -> None:
        time.sleep(1)  # the load is in full swing
        redis_cluster.kill9(victim)
        killed = time.monotonic()
        deadline = killed + 30
        while time.monotonic() < deadline:
            try:
                master, _ = redis_cluster.master_of(shard_slot(victim_shard))
                if master in replicas:
                    break
            except (redis.RedisError, LookupError):
                pass
            time.sleep(0.1)
        failover["promoted_after"] = time.monotonic() - killed
        redis_cluster.wait_ready(in_sync=False)
        # A supervisor restarts the dead node: it comes back as a replica of the new master,
        # so the shard can acknowledge writes again (WAIT 1 needs a replica).
        redis_cluster.restart(victim)
        redis_cluster.wait_ready()
        failover["replica_back_after"] = time.monotonic() - killed

    injector = threading.Thread(target=fault)
    injector.start()
    load.run(range(1500, 4000))
    injector.join()
    assert not fault_error, fault_error
    assert "promoted_after" in failover and failover["promoted_after"] < 30, "no replica was promoted"
    new_master, _ = redis_cluster.master_of(shard_slot(victim_shard))
    assert new_master in replicas
    # The promoted replica serves the shard: writes of its clients are acknowledged again.
    victim_address = next(a for a in ADDRESSES if shard_of(a) == victim_shard)
    deadline = time.monotonic() + 20
    while post(stack, "/message/write/", message(10_000, 0), victim_address)[0] != 202:
        assert time.monotonic() < deadline, "the failed-over shard never accepted writes again"
        time.sleep(0.2)
    load.sent.add("r10000i0")
    load.run(range(4000, 4500))  # after the fault

    # Exactly once: every 202 stored, once; a write not answered 202 stored at most once.
    stored_by_text: dict[str, list[str]] = {}
    expected = len(load.accepted)
    wait_until_stored(stack, expected, timeout=90)
    time.sleep(2)  # stragglers of writes that were staged but answered 503
    connection = stack.db()
    with connection.cursor() as cursor:
        cursor.execute("SELECT id::text, message FROM message")
        for message_id, text in cursor.fetchall():
            stored_by_text.setdefault(text, []).append(message_id)
        assert_rollups_match(cursor)
    connection.close()
    stored_ids = {i for ids in stored_by_text.values() for i in ids}
    missing = set(load.accepted) - stored_ids
    assert not missing, f"{len(missing)} acknowledged messages were lost: {sorted(missing)[:5]}"
    twice = {text: ids for text, ids in stored_by_text.items() if len(ids) > 1}
    assert not twice, f"stored more than once: {list(twice.items())[:5]}"
    assert set(stored_by_text) <= load.sent
    assert load.statuses.get(202, 0) > 3000, load.statuses
    # Every shard took writes, and nothing is left staged in any; /status sums the shards.
    streams = [f"{harness.SYSTEM.key_prefix}:{{{shard_tag(i, SHARDS)}}}:stream" for i in range(SHARDS)]
    cluster = redis.RedisCluster.from_url(
        harness.redis_user_url(f"rediss://127.0.0.1:{redis_cluster.ports[0]}/0"), ssl_ca_certs=str(redis_cluster.tls.ca)
    )
    try:
        assert all(cluster.xinfo_stream(stream)["entries-added"] > 100 for stream in streams)
        deadline = time.monotonic() + 30
        while sum(cluster.xlen(stream) for stream in streams) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert sum(cluster.xlen(stream) for stream in streams) == 0
    finally:
        cluster.close()
    status, report = stack.get("/status")
    assert status == 200
    assert report["components"]["staging"]["backlog"] == 0
    assert report["components"]["redis"]["status"] == "ok"
    assert report["components"]["redis"]["durability_problems"] == []  # every master asked
    print(
        f"\nredis cluster: {len(load.accepted)} acknowledged, statuses {load.statuses}, "
        f"{len(stored_ids) - len(load.accepted)} stored without a 202; master killed "
        f"{fault_at - started:.1f} s in, replica promoted after {failover['promoted_after']:.1f} s, dead node "
        f"back as a replica after {failover['replica_back_after']:.1f} s, "
        f"test took {time.monotonic() - started:.1f} s"
    )


def test_the_cluster_refuses_clients_without_credentials_without_tls_or_beyond_their_role(redis_cluster):
    """Across hosts the staging cluster is TLS only, with no default user: a client without
    credentials, with a wrong password, or speaking plain TCP gets nothing; the web tier's user
    cannot reconfigure it or read keys outside the namespace."""
    url, ca = f"rediss://127.0.0.1:{redis_cluster.ports[0]}/0", str(redis_cluster.tls.ca)
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url, ssl_ca_certs=ca, socket_timeout=2).get("messy:any")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(f"rediss://messy-web:wrong@127.0.0.1:{redis_cluster.ports[0]}/0", ssl_ca_certs=ca).ping()
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=redis_cluster.ports[0], socket_timeout=2, socket_connect_timeout=2).ping()

    web = redis.Redis.from_url(harness.redis_user_url(url, "web"), ssl_ca_certs=ca, socket_timeout=2)
    assert web.ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        web.config_set("maxmemory-policy", "allkeys-lru")
    with pytest.raises(redis.exceptions.NoPermissionError):
        web.get("not-messy:key")
