"""Persist rate with 1, 2 and 3 worker hosts, in one run (issue 10, item 2).

On the network-namespace cluster of the multi-host test (tests/cluster/netns.py: Redis,
PostgreSQL, two memcached servers and S3 on hosts of their own, worker hosts `worker1..3`), for
each number of worker hosts: empty the tables and Redis, stage N messages straight into the
stream (as bench/persist.py does: 20,000 users, 500 cities, 50 states), start that many worker
hosts (`./runworker.sh ingest`, WORKER_INGEST_CONCURRENCY processes each, every setting left at
its default: however drain concurrency is bounded, it is what a deployment gets), ask for a drain
as the beat's sweep does, and time the backlog from its first stored batch to empty. PostgreSQL
runs with fsync on, as the machine's server does.

Beside each rate it prints what shows where the time goes: the most drains seen holding a batch
at once (consumers with pending entries, sampled every 50 ms) and the CPU each host used
(from /proc, in cores: the machine has os.cpu_count()). With --profile, py-spy records every
pool process of worker1 during the run with the most hosts (idle time included, so waiting on
PostgreSQL or Redis shows as such) and the top frames are printed; the raw profile stays in the
run's folder. py-spy is not a dependency of the project: install it where you like
(`python3 -m venv /tmp/pyspy && /tmp/pyspy/bin/pip install py-spy`) and pass --py-spy PATH.

Root only (network namespaces). Run: `make bench-hosts` or
`.venv/bin/python -m bench.hosts [--messages 200000] [--hosts 1,2,3] [--rounds 2] [--profile --py-spy PATH]`.
Prints figures; nothing passes or fails."""

import argparse
import collections
import contextlib
import os
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tests.cluster.netns import Cluster, Host, cluster_running
from tests.harness import ROOT, VENV_BIN, redis_admin, tables_truncate_sql

RESULTS = ROOT / "bench-results"
GROUP = "persisters"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WORKERS_SETTLE_SECONDS = 6
TEST_TUNING = ("MESSY_DRAIN_BATCH_SIZE", "MESSY_DRAIN_RECLAIM_IDLE_MS", "MESSY_DRAIN_SLOT_TTL")


def _stage(count: int) -> None:
    """In a child with the cluster's settings: stage `count` messages as bench/persist.py does,
    then nothing else (no drain is asked for)."""
    import django

    django.setup()
    import orjson

    from bench.persist import _payloads
    from messages import ids, staging

    client = staging.redis_client()
    staging.group_ensure(staging.shards()[0])
    pipe = client.pipeline(transaction=False)
    for i, payload in enumerate(_payloads(count, ids)):
        pipe.xadd(staging.shards()[0].stream, {"m": orjson.dumps(payload)})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def _sweep() -> None:
    """In a child with the cluster's settings: what beat's sweep does every few seconds."""
    import django

    django.setup()
    from messages import services

    services.messages_sweep()


def _reconcile() -> None:
    """In a child with the cluster's settings: what `manage.py stats_reconcile` checks."""
    import django

    django.setup()
    from stats.selectors import rollups_differences

    differences = rollups_differences()
    print(f"stats_reconcile: {len(differences)} difference(s)", *differences[:5], sep="\n  ", flush=True)


def _child(cluster: Cluster, *args: str) -> None:
    subprocess.run(
        [str(VENV_BIN / "python"), "-m", "bench.hosts", *args], cwd=ROOT, env=cluster.env, check=True, timeout=600
    )


def _streams(cluster: Cluster) -> list[bytes]:
    """The staging streams the drains read (those with the drains' consumer group)."""
    staging, found = cluster.staging_redis(), []
    for stream in staging.scan_iter(match=f"{cluster.config.key_prefix}:*", _type="stream"):
        with contextlib.suppress(Exception):  # no drains' group: the dead letters
            if any(g["name"] == GROUP.encode() for g in staging.xinfo_groups(stream)):
                found.append(stream)
    return found


def _host_cpu_seconds(host: Host) -> float:
    """CPU time of the host's processes, with that of their children that have exited (a
    PostgreSQL backend whose client went away is counted in its postmaster's)."""
    total = 0
    for pid in host.pids():
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(n) for n in fields[11:15])  # utime, stime, cutime, cstime
    return total / CLOCK_TICKS


@dataclass
class Run:
    hosts: int
    stored: int
    seconds: float
    most_drains: int
    mean_drains: float
    cores: dict[str, float]
    postgres_waits: dict[str, float]  # PostgreSQL backends busy on a drain's statement, by wait

    @property
    def rate(self) -> float:
        return self.stored / self.seconds


CGROUP_V1 = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup")
CGROUP_PERIOD_US = 100_000


class CpuCap:
    """A cgroup per worker host holding its processes to `cores` of CPU (cpu.cfs_quota_us under
    cgroup v1, cpu.max under v2), so the hosts, not the machine, are the bottleneck; PostgreSQL
    and Redis stay outside. Children a worker forks later inherit its group."""

    def __init__(self, cores: float) -> None:
        self.cores = cores
        self.v1 = (CGROUP_V1 / "cpu.cfs_quota_us").exists()
        self.root = (CGROUP_V1 if self.v1 else CGROUP_V2) / f"messy-bench-{os.getpid()}"
        self.root.mkdir(exist_ok=True)
        if not self.v1:
            (CGROUP_V2 / "cgroup.subtree_control").write_text("+cpu")
            (self.root / "cgroup.subtree_control").write_text("+cpu")

    def hold(self, host: Host) -> None:
        group = self.root / host.name
        group.mkdir(exist_ok=True)
        quota = int(self.cores * CGROUP_PERIOD_US)
        if self.v1:
            (group / "cpu.cfs_period_us").write_text(str(CGROUP_PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (group / "cpu.max").write_text(f"{quota} {CGROUP_PERIOD_US}")
        for pid in host.pids():
            with contextlib.suppress(OSError):  # gone meanwhile
                (group / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        """After every host's processes are gone (a group with processes cannot be removed)."""
        for group in [*self.root.iterdir(), self.root]:
            if group.is_dir():
                with contextlib.suppress(OSError):
                    group.rmdir()


def _machine_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (every core, every process)."""
    fields = [int(n) for n in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


MACHINE = "whole machine"


def cpu_snapshot(hosts: list[Host]) -> dict[str, float]:
    """CPU seconds used so far by each host's processes, and by the whole machine (others'
    work on a shared machine shows as the difference)."""
    return {MACHINE: _machine_cpu_seconds()} | {host.name: _host_cpu_seconds(host) for host in hosts}


# The drains' statements in flight, by what their backend waits for: "CPU" when it waits for
# nothing (running, or ready to run), "Lock:..." for a lock another transaction holds ("tuple" or
# "transactionid": a row lock, such as a rollup row that concurrent drains update; "advisory":
# the rollups' fold lock), "IO", "LWLock" (WAL, buffers), "Client" and so on.
ACTIVE_BACKENDS = """
SELECT CASE WHEN wait_event_type = 'Lock' THEN 'Lock:' || wait_event ELSE coalesce(wait_event_type, 'CPU') END,
    count(*)
FROM pg_stat_activity
WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1
"""


class Sampler(threading.Thread):
    """Every 50 ms: the messages still staged and the drains holding a batch; the CPU every host
    has used, when the backlog first falls (the first batch stored) and when it is empty."""

    def __init__(self, cluster: Cluster, total: int) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.total = total
        self.streams = _streams(cluster)
        self.samples: list[tuple[float, int, int]] = []  # (time, staged, drains holding a batch)
        self.waits: list[tuple[float, collections.Counter[str]]] = []  # (time, active backends by wait)
        self.started: tuple[float, dict[str, float]] | None = None
        self.emptied: tuple[float, dict[str, float]] | None = None

    def run(self) -> None:
        staging, hosts = self.cluster.staging_redis(), list(self.cluster.network.hosts.values())
        postgres = self.cluster.db()
        while self.emptied is None:
            time.sleep(0.05)
            with postgres.cursor() as cursor:
                cursor.execute(ACTIVE_BACKENDS)
                self.waits.append((time.monotonic(), collections.Counter(dict(cursor.fetchall()))))
            staged, holding = 0, 0
            for stream in self.streams:
                staged += staging.xlen(stream)
                with contextlib.suppress(Exception):
                    holding += sum(1 for c in staging.xinfo_consumers(stream, GROUP) if c["pending"])
            now = time.monotonic()
            self.samples.append((now, staged, holding))
            if self.started is None and staged < self.total:
                self.started = (now, cpu_snapshot(hosts))
            elif self.started is not None and staged == 0:
                self.emptied = (now, cpu_snapshot(hosts))
        postgres.close()

    def result(self, hosts: int, stored: int) -> Run:
        assert self.started and self.emptied
        (started, cpu_before), (emptied, cpu_after) = self.started, self.emptied
        seconds = emptied - started
        cores = {name: (cpu_after[name] - cpu_before[name]) / seconds for name in cpu_after}
        during = [holding for at, _, holding in self.samples if started <= at <= emptied] or [0]
        waits = [counts for at, counts in self.waits if started <= at <= emptied]
        postgres_waits = {kind: n / max(1, len(waits)) for kind, n in sum(waits, collections.Counter()).items()}
        return Run(hosts, stored, seconds, max(during), sum(during) / len(during), cores, postgres_waits)


def _profile(py_spy: str, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy on the worker's main process and its pool processes, idle time included."""
    duration = str(max(1, round(seconds)))
    options = [
        "--subprocesses",
        "--idle",
        "--threads",
        "--rate",
        "250",
        "--duration",
        duration,
        "--format",
        "raw",
        "--nonblocking",
    ]
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), *options, "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


PROJECT_FRAME = ("(messages/", "(stats/", "(project/")
LEAF_KINDS = (
    ("in a PostgreSQL call (waiting for the server, or psycopg2)", ("django/db/", "psycopg2")),
    ("in a Redis call (waiting for the server, or redis-py)", ("redis/",)),
    ("waiting for the drain's other thread", ("threading.py", "concurrent/futures")),
    ("importing (a process's first task)", ("importlib", "<module>")),
)


def _kind(leaf: str) -> str:
    for kind, markers in LEAF_KINDS:
        if any(marker in leaf for marker in markers):
            return kind
    return "Python in the worker (decoding, building rows, Celery)"


def profile_summary(raws: list[Path], top: int = 15) -> str:
    """The drain threads' samples (stacks through the project's messages/stats code, the
    worker registry's heartbeat thread left out) by leaf frame, and by the project frame
    nearest to the leaf: what our code was doing, or waiting for."""
    leaves: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    total = 0
    for raw in raws:
        for line in raw.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            frames = stack.split(";")
            project = [frame for frame in frames if any(p in frame for p in PROJECT_FRAME)]
            drain = any("(messages/" in frame for frame in project)
            if not drain or any("heartbeat" in frame for frame in project):
                continue
            count = int(count_text)
            total += count
            leaves[frames[-1]] += count
            ours[project[-1]] += count
            # The drain's own thread stores (PostgreSQL); its helper thread reads the next batch
            # and acknowledges the last (Redis) meanwhile.
            thread = "helper thread" if any("Thread.run" in frame for frame in frames) else "drain thread"
            kinds[f"{thread}: {_kind(frames[-1])}"] += count
    if not total:
        return "no samples in drain code (did py-spy run? it needs root and --py-spy PATH)"
    lines = [f"{total} samples of the drains' two threads (idle included); by thread and kind:"]
    lines += [f"  {n / total:6.1%}  {kind}" for kind, n in sorted(kinds.items())]
    lines += ["by leaf frame:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in leaves.most_common(top)]
    lines += ["by the project frame nearest the leaf:"]
    lines += [f"  {n / total:6.1%}  {frame}" for frame, n in ours.most_common(top)]
    return "\n".join(lines)


def measure(
    cluster: Cluster, hosts: int, messages: int, concurrency: int, py_spy: str | None = None, cap: CpuCap | None = None
) -> Run:
    """One drain of `messages` staged messages by `hosts` worker hosts; with py_spy, each
    worker host's processes are recorded meanwhile into the run folder; with cap, each worker
    host is held to its CPU share."""
    cluster.staging_redis().flushdb()
    redis_admin(cluster.env["CELERY_BROKER_URL"], ssl_ca_certs=cluster.env["REDIS_TLS_CA_CERT_FILE"]).flushdb()
    connection = cluster.db()
    with connection.cursor() as cursor:
        cursor.execute(tables_truncate_sql())
    _child(cluster, "--stage", str(messages))
    workers = cluster.worker_hosts[:hosts]
    for host in workers:
        cluster.start_worker(host, concurrency)
    cluster.wait_workers_ready(workers)
    if cap:
        for host in workers:
            cap.hold(host)
    # Each worker reports its processes every 5 s (Drains follow the workers in the README); a
    # drain started before every new host has reported would start too few helpers.
    time.sleep(WORKERS_SETTLE_SECONDS)
    sampler = Sampler(cluster, messages)
    sampler.start()
    profilers = []
    if py_spy:
        assert cluster.logs is not None
        for host in workers:
            out = cluster.logs / f"py-spy-{host.name}.raw"
            profilers.append(_profile(py_spy, cluster.processes[host.name].pid, messages / 10_000, out))
    _child(cluster, "--sweep")
    sampler.join(600)
    for profiler in profilers:
        profiler.wait(120)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM message")
        (stored,) = cursor.fetchone() or (0,)
    connection.close()
    for host in workers:
        cluster.kill_host(host)
    _child(cluster, "--reconcile")
    return sampler.result(hosts, stored)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--hosts", help="numbers of worker hosts (default 1,2,3; 1,2,4,8 with --cpu-share)")
    parser.add_argument(
        "--concurrency", type=int, help="processes per worker host (default: cores; 1 with --cpu-share)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="times each count of hosts is measured")
    parser.add_argument(
        "--cpu-share",
        type=float,
        help="hold each worker host to this many cores (a cgroup each; PostgreSQL and Redis are not held)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy on worker1 during the run with most hosts")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--stage", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sweep", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reconcile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        return _stage(args.stage)
    if args.sweep:
        return _sweep()
    if args.reconcile:
        return _reconcile()

    capped = args.cpu_share is not None
    counts = [int(n) for n in (args.hosts or ("1,2,4,8" if capped else "1,2,3")).split(",")]
    args.concurrency = args.concurrency or (1 if capped else os.cpu_count() or 2)
    cap = CpuCap(args.cpu_share) if capped else None
    run_dir = RESULTS / f"hosts-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    runs: list[Run] = []
    try:
        _runs(args, counts, cap, run_dir, runs)
    finally:
        if cap:
            cap.remove()
    _report(args, counts, cap, run_dir, runs)


def _runs(args: argparse.Namespace, counts: list[int], cap: CpuCap | None, run_dir: Path, runs: list[Run]) -> None:
    with cluster_running(run_dir, postgres_fsync=True, web_hosts=0, worker_hosts=max(counts)) as cluster:
        # The drain as deployed: not the system tests' small batches and quick takeovers.
        for name in TEST_TUNING:
            cluster.env.pop(name, None)
        drain_settings = {k: v for k, v in sorted(cluster.env.items()) if k.startswith("MESSY_DRAIN")}
        # Rounds in alternating order (1, 2, 3, 3, 2, 1, ...): load that drifts on a shared
        # machine then weighs on every count alike.
        for round_ in range(args.rounds):
            for hosts in counts if round_ % 2 == 0 else counts[::-1]:
                runs.append(measure(cluster, hosts, args.messages, args.concurrency, cap=cap))
                print(f"{hosts} worker host(s): {runs[-1].rate:,.0f} messages/s", flush=True)
        if args.profile:
            # A run of its own: the profiler stops the processes it samples, which slows them.
            args.profiled = measure(cluster, max(counts), args.messages, args.concurrency, args.py_spy, cap)
        args.drain_settings = drain_settings


def _report(args: argparse.Namespace, counts: list[int], cap: CpuCap | None, run_dir: Path, runs: list[Run]) -> None:
    drain_settings = args.drain_settings
    print()
    print(f"persist rate of {args.messages:,} staged messages, {args.concurrency} processes per worker host,")
    print(f"{os.cpu_count()} cores on this machine; drain settings: {drain_settings or 'defaults'}")
    if cap:
        print(f"each worker host held to {cap.cores:g} cores (a cgroup each); PostgreSQL and Redis not held")
    print(
        "| worker hosts | messages/s | vs 1 host (mean) | most / mean drains holding a batch "
        "| CPU in cores, per host | machine busy (outside the cluster) | PostgreSQL statements in flight, by wait |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    mean = {n: statistics.fmean(run.rate for run in runs if run.hosts == n) for n in counts}
    one_host = mean[min(counts)]
    runs.sort(key=lambda run: run.hosts)  # stable: each count's rounds in order
    for run in runs:
        per_host = {name: cores for name, cores in run.cores.items() if name != MACHINE}
        busy = sorted(((cores, name) for name, cores in per_host.items() if cores >= 0.05), reverse=True)
        cpu = ", ".join(f"{name} {cores:.2f}" for cores, name in busy)
        waits = ", ".join(f"{kind} {n:.1f}" for kind, n in sorted(run.postgres_waits.items(), key=lambda kv: -kv[1]))
        machine, outside = run.cores[MACHINE], run.cores[MACHINE] - sum(per_host.values())
        print(
            f"| {run.hosts} | {run.rate:,.0f} | {run.rate / one_host:.2f}x | "
            f"{run.most_drains} / {run.mean_drains:.1f} | {cpu} | {machine:.2f} ({outside:.2f}) | {waits} |"
        )
    print("mean of the rounds: " + ", ".join(f"{n} host(s) {rate:,.0f} messages/s" for n, rate in mean.items()))
    print("drains' statements waiting for a lock / running (mean of the samples), by hosts:")
    for n in counts:
        of_n = [run for run in runs if run.hosts == n]
        locks = statistics.fmean(
            sum(n for kind, n in run.postgres_waits.items() if kind.startswith("Lock")) for run in of_n
        )
        advisory = statistics.fmean(run.postgres_waits.get("Lock:advisory", 0.0) for run in of_n)
        running = statistics.fmean(run.postgres_waits.get("CPU", 0.0) for run in of_n)
        tiers = {
            tier: statistics.fmean(sum(c for name, c in run.cores.items() if name.startswith(tier)) for run in of_n)
            for tier in ("worker", "postgres", "redis")
        }
        cpu = ", ".join(f"{tier} {cores:.2f}" for tier, cores in tiers.items())
        print(
            f"  {n} host(s): lock {locks:.2f} (of which the fold lock {advisory:.2f}) / running {running:.2f};"
            f" CPU in cores: {cpu}"
        )
    if args.profile:
        print()
        print(f"py-spy on every worker host's processes, {max(counts)} worker hosts, in a run of its own")
        print(f"({args.profiled.rate:,.0f} messages/s under the profiler; raw profiles: {run_dir}/py-spy-*.raw):")
        print(profile_summary(sorted(run_dir.glob("py-spy-*.raw"))))
    print(f"\nlogs: {run_dir}")
    print(f"scaling: {max(counts)} hosts / {min(counts)} host = {mean[max(counts)] / one_host:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    main()
