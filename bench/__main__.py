"""`make bench`: every figure of docs/benchmarks.md, from one run on one server configuration,
against the project's own Redis (scripts/bench.sh), the production web server, no worker
running while accept rates are measured. At the end of a full run the figures are appended to
bench/results.jsonl (bench/results.py). Options: --seconds N (each measurement; a comparison
gives each endpoint three times that, in turns), --persist N, --skip-publish,
--end-to-end-seconds N (0 skips it), --in-process (bench/inprocess.py only).
Documented in docs/benchmarks.md.
"""

import argparse
import datetime
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench import cpu, end_to_end, publish, results
from bench.http import MESSAGE, hey_latency, wrk_rate
from tests.harness import (
    BENCH,
    ROOT,
    ProcessGroup,
    SlowUploads,
    database_create,
    free_port,
    redis_admin,
    redis_reset,
    wait_for_port,
)

Reporter = Callable[[str, str], None]

RESULTS = ROOT / "bench-results"


# The benchmark's web server runs with quotas on (as by default) but never binding: every
# figure includes the quota check, and quota_cost() compares it with a server without one.
UNBOUND_QUOTA = "1000000000"

# The front door's target (DESIGN.md): normal writes keep their latency with this many slow
# clients holding connections open.
SLOW_CLIENTS = 200

# Each comparison measures its endpoints in short alternating turns until each has had three
# times --seconds, so the machine's drift in speed falls evenly on every endpoint.
# Documented in docs/benchmarks.md.
TURN_SECONDS = 2


def alternated(
    urls: dict[str, str], body: str, seconds: int, empty_backlog: bool = False
) -> dict[str, tuple[float, int]]:
    """Each URL's peak rate (wrk_rate), measured in turns (TURN_SECONDS) and averaged, with its
    non-2xx answers summed. With empty_backlog, each turn starts on an emptied backlog."""
    turn = min(TURN_SECONDS, seconds)
    measured: dict[str, list[tuple[float, int]]] = {name: [] for name in urls}
    for _ in range(max(1, 3 * seconds // turn)):
        for name, url in urls.items():
            if empty_backlog:
                redis_reset(BENCH)
            measured[name].append(wrk_rate(url, body, turn))
    return {
        name: (sum(rate for rate, _ in runs) / len(runs), sum(errors for _, errors in runs))
        for name, runs in measured.items()
    }


def quota_cost(report: Reporter, processes: ProcessGroup, base: str, body: str, seconds: int, web: int) -> None:
    """The per-client quota check's cost: the single-write accept rate of the benchmark's server
    (quotas on) against a second server of the same size with MESSY_QUOTA_RATE=0, measured
    alternately in the same run, each turn on an emptied backlog.

    Two gunicorns of the same code differ by about as much as the check costs
    (docs/benchmarks.md), so their no-op views are measured in the same turns, and the check's
    own share is the write ratio over the no-op ratio (what the quota does not touch)."""
    port = free_port()
    processes.web(port, web, name="web-quota-off", MESSY_QUOTA_RATE="0")
    off = f"http://127.0.0.1:{port}"
    wrk_rate(f"{off}/message/write/", body, 2)  # warm up
    urls = {
        "on": f"{base}/message/write/",
        "off": f"{off}/message/write/",
        "on, no-op": f"{base}/message/noop/",
        "off, no-op": f"{off}/message/noop/",
    }
    rates = {name: rate for name, (rate, _) in alternated(urls, body, seconds, empty_backlog=True).items()}
    processes.processes.pop("web-quota-off").stop()
    writes, noops = rates["on"] / rates["off"], rates["on, no-op"] / rates["off, no-op"]
    results.record("quota_own_share", writes / noops)
    report(
        "per-client quota check: accept rate on / off",
        f"{rates['on']:,.0f} / {rates['off']:,.0f} req/s = {writes:.1%}; the same servers' no-op views"
        f" {noops:.1%}; the check's own share {writes / noops:.1%} (target: at least 95%)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--persist", type=int, default=200_000)
    parser.add_argument("--web-processes", type=int, default=(os.cpu_count() or 2) * 2)
    parser.add_argument("--skip-publish", action="store_true")
    parser.add_argument("--end-to-end-seconds", type=int, default=60, help="0 skips the end-to-end run")
    parser.add_argument("--in-process", action="store_true", help="only bench/inprocess.py's breakdown")
    args = parser.parse_args()
    if args.in_process:
        in_process()
        return

    lines: list[str] = []

    def report(name: str, value: str) -> None:
        line = f"{name:<48} {value}"
        print(line, flush=True)
        lines.append(line)

    report("machine", f"{os.cpu_count()} cores, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    database_create(BENCH)
    redis_reset(BENCH)
    port = free_port()
    # Quotas on (as by default) but never binding, so every figure includes the quota check.
    processes = ProcessGroup(BENCH.env(MESSY_QUOTA_RATE=UNBOUND_QUOTA, MESSY_QUOTA_BURST=UNBOUND_QUOTA))
    try:
        processes.env["MEMCACHED_SERVERS"] = memcached_start(processes)
        processes.web(port, args.web_processes)
        base = f"http://127.0.0.1:{port}"
        single = json.dumps(MESSAGE)
        report("web server", f"gunicorn, {args.web_processes} sync worker processes")
        wrk_rate(f"{base}/message/noop/", single, 2)  # warm up every process
        wrk_rate(f"{base}/message/write/", single, 2)
        wrk_rate(f"{base}/message/django/write/", single, 2)
        paths = ("noop", "write", "django/write")
        runs = alternated({path: f"{base}/message/{path}/" for path in paths}, single, args.seconds)
        (noop_rate, _), (write_rate, write_errors), (django_rate, django_errors) = (runs[path] for path in paths)
        report("no-op Django view (same server)", f"{noop_rate:,.0f} req/s")
        report("single-message accept rate (lean)", f"{write_rate:,.0f} req/s ({write_errors} non-2xx)")
        report("  the same through Django's view", f"{django_rate:,.0f} req/s ({django_errors} non-2xx)")
        results.record("noop_rate", noop_rate)
        results.record("write_rate", write_rate)
        results.record("django_rate", django_rate)
        results.record("write_noop_ratio", write_rate / noop_rate)
        results.record("django_noop_ratio", django_rate / noop_rate)
        report("accept rate / no-op rate (lean)", f"{write_rate / noop_rate:.0%} (target: at least 100%)")
        report("  through Django's view", f"{django_rate / noop_rate:.0%}")
        cpu_breakdown(report, processes, base, single, args.seconds)
        for name, path, rate in (("lean", "write", write_rate), ("Django", "django/write", django_rate)):
            latency = hey_latency(f"{base}/message/{path}/", single, rate / 2, args.seconds)
            results.record(f"{path.replace('/', '_')}_p99_ms", latency["p99"])
            report(
                f"latency at half load ({name})",
                f"p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms at {latency['rate']:,.0f} req/s"
                f" ({latency['non_202']} non-202) (target: p99 under 20 ms)",
            )
        batch_size = 500
        batch = json.dumps([{**MESSAGE, "message": f"{MESSAGE['message']} {i}"} for i in range(batch_size)])
        batch_rates = {}
        for name, path in (("Django", "django/batch"), ("lean", "batch")):
            redis_reset(BENCH)  # the staged backlog so far, so the batches are measured alone
            rate, errors = wrk_rate(f"{base}/message/{path}/", batch, args.seconds, connections=8)
            batch_rates[name] = rate * batch_size
            results.record("batch_rate" if name == "lean" else "django_batch_rate", rate * batch_size)
            report(
                f"batch accept rate ({batch_size} per request, {name})",
                f"{rate * batch_size:,.0f} messages/s ({errors} non-2xx) (target: at least 50,000)",
            )
        report("batch accept rate, lean / Django", f"{batch_rates['lean'] / batch_rates['Django']:.0%}")
        front_door(report, processes, base, port, single, args.seconds)
        append_fsync_always(report, processes, base, single, batch, batch_size, args)
        redis_reset(BENCH)
        quota_cost(report, processes, base, single, args.seconds, args.web_processes)
        if args.end_to_end_seconds:
            end_to_end.run(report, processes, base, 0.8, args.end_to_end_seconds)
    finally:
        processes.stop_all()
        for folder in scratch:
            shutil.rmtree(folder, ignore_errors=True)

    redis_reset(BENCH)
    output = subprocess.run(
        [sys.executable, "-m", "bench.persist", str(args.persist)],
        cwd=ROOT,
        # Throughput, not the drain's idle wait for more messages at the end of each run.
        env=BENCH.env(MESSY_DRAIN_IDLE_WAIT_MS="0"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    persisted = json.loads(output.strip().splitlines()[-1])
    results.record("persist_rate", persisted["rate"])
    results.record("copy_ceiling", persisted["copy_ceiling"])
    report(
        "persist rate, one worker process",
        f"{persisted['rate']:,.0f} messages/s ({persisted['stored']:,} in {persisted['seconds']:.1f} s,"
        " rollups included) (target: at least 30,000)",
    )
    report(
        "COPY ceiling, one process (bench/persist.py)",
        f"{persisted['copy_ceiling']:,.0f} rows/s into a table like message (its indexes, logged),"
        f" {persisted['batch_size']:,} rows a transaction",
    )
    report("persist rate / COPY ceiling", f"{persisted['rate'] / persisted['copy_ceiling']:.1%}")

    if not args.skip_publish:
        publish.run(report)

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.txt").write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {Path(RESULTS / 'latest.txt').relative_to(ROOT)}")
    results.run_append(results.RESULTS_FILE, results.figures)
    print(f"appended to {results.RESULTS_FILE.relative_to(ROOT)}")


def cpu_breakdown(report: Reporter, processes: ProcessGroup, base: str, body: str, seconds: int) -> None:
    """µs of CPU per request, by process, of the no-op view and of the lean write under the same
    load (bench/cpu.py): what the write costs the web processes, Redis and memcached, against
    what Django's machinery costs the no-op view."""
    redis_pid = int(redis_admin(BENCH.staging_url).info("server")["process_id"])
    meters = {
        "web": functools.partial(cpu.process_group_cpu, processes.processes["web"].pid),
        "Redis": functools.partial(cpu.process_cpu, redis_pid),
        "memcached": functools.partial(cpu.process_group_cpu, processes.processes["memcached"].pid),
    }
    for name, path in (("no-op", "noop"), ("lean write", "write")):
        redis_reset(BENCH)
        rate, used = cpu.cpu_per_request(f"{base}/message/{path}/", body, seconds, meters)
        figures = ", ".join(f"{meter} {micros:,.0f}" for meter, micros in used.items() if micros >= 0.5)
        report(f"CPU per request under load ({name}), µs", f"{figures} (at {rate:,.0f} req/s)")


def memcached_start(processes: ProcessGroup) -> str:
    """make run's memcached (scripts/memcached.sh, on a Unix socket) in a scratch folder; returns
    the MEMCACHED_SERVERS that names it."""
    memcached_socket = Path(_scratch_dir("messy-bench-memcached-")) / "memcached" / "memcached.sock"
    processes.memcached_on_socket(memcached_socket)
    return f"unix:{memcached_socket}"


def in_process() -> None:
    """bench/inprocess.py, against the benchmark's Redis and make run's memcached on a socket."""
    database_create(BENCH)
    processes = ProcessGroup(BENCH.env())
    try:
        env = BENCH.env(
            MESSY_QUOTA_RATE=UNBOUND_QUOTA,
            MESSY_QUOTA_BURST=UNBOUND_QUOTA,
            MEMCACHED_SERVERS=memcached_start(processes),
        )
        subprocess.run([sys.executable, "-m", "bench.inprocess"], cwd=ROOT, env=env, check=True)
    finally:
        processes.stop_all()
        for folder in scratch:
            shutil.rmtree(folder, ignore_errors=True)


# Folders of the extra servers started below, removed at the end of the run.
scratch: list[str] = []


def _scratch_dir(prefix: str) -> str:
    folder = tempfile.mkdtemp(prefix=prefix)
    os.chmod(folder, 0o755)  # nginx's workers (nobody) keep request bodies there
    scratch.append(folder)
    return folder


def front_door(report: Reporter, processes: ProcessGroup, base: str, web_port: int, body: str, seconds: int) -> None:
    """The accept rate through the front door (scripts/front.sh: nginx, as make run starts it,
    reaching gunicorn through its Unix socket) and straight to the same gunicorn over TCP, one
    after the other. The per-address limit is lifted: all of the benchmark's load comes from
    one address."""
    port = free_port()
    processes.front(
        port,
        web_port,
        Path(_scratch_dir("messy-bench-front-")),
        through_socket=processes.sockets["web"],
        FRONT_RATE_PER_IP="10000000",
        FRONT_BURST_PER_IP="10000000",
    )
    front = f"http://127.0.0.1:{port}"
    wrk_rate(f"{front}/message/write/", body, 2)
    rates = alternated(
        {"direct": f"{base}/message/write/", "front": f"{front}/message/write/"}, body, seconds, empty_backlog=True
    )
    (direct_rate, _), (front_rate, front_errors) = rates["direct"], rates["front"]
    results.record("front_direct_ratio", front_rate / direct_rate)
    report(
        "accept rate through the front door / direct",
        f"{front_rate:,.0f} / {direct_rate:,.0f} req/s = {front_rate / direct_rate:.0%}"
        f" ({front_errors} non-2xx) (target: at least 90%)",
    )
    # Slow clients: the front door reads their bodies, so the web processes never wait on them.
    with SlowUploads(port, SLOW_CLIENTS):
        latency = hey_latency(f"{front}/message/write/", body, front_rate / 2, seconds)
    results.record("front_slow_p99_ms", latency["p99"])
    report(
        f"front door at half load, {SLOW_CLIENTS} slow uploads",
        f"p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms at {latency['rate']:,.0f} req/s"
        f" ({latency['non_202']:.0f} non-202) (target: p99 under 100 ms)",
    )
    processes.processes.pop("front").stop()


def append_fsync_always(
    report: Reporter,
    processes: ProcessGroup,
    base: str,
    single: str,
    batch: str,
    batch_size: int,
    args: argparse.Namespace,
) -> None:
    """What appendfsync always (an fsync before every answer: nothing acknowledged is lost even
    to a power cut) costs against the default everysec: the same web tier staging into a second
    staging Redis started by scripts/redis.sh with REDIS_APPENDFSYNC=always."""
    redis_port, web_port = free_port(), free_port()
    data = _scratch_dir("messy-bench-redis-")
    processes.start(
        "redis-always",
        ["./scripts/redis.sh", "staging"],
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        REDIS_DATA_DIR=data,
        REDIS_BIND="127.0.0.1",
        REDIS_APPENDFSYNC="always",
    )
    wait_for_port(redis_port)
    # Through its Unix socket, as the benchmark's own web server reaches the everysec one.
    always_url = f"unix://{data}/redis.sock?db=0"
    processes.web(web_port, args.web_processes, name="web-always", REDIS_URL=always_url)
    always = f"http://127.0.0.1:{web_port}"
    wrk_rate(f"{always}/message/write/", single, 2)
    rates = {}
    for name, url in (("everysec", base), ("always", always)):
        redis_reset(BENCH)
        rates[name] = (
            wrk_rate(f"{url}/message/write/", single, args.seconds)[0],
            wrk_rate(f"{url}/message/batch/", batch, args.seconds, connections=8)[0] * batch_size,
        )
    results.record("fsync_always_single_ratio", rates["always"][0] / rates["everysec"][0])
    report(
        "single writes, appendfsync always / everysec",
        f"{rates['always'][0]:,.0f} / {rates['everysec'][0]:,.0f} req/s"
        f" = {rates['always'][0] / rates['everysec'][0]:.0%}",
    )
    report(
        "batch messages, appendfsync always / everysec",
        f"{rates['always'][1]:,.0f} / {rates['everysec'][1]:,.0f} messages/s"
        f" = {rates['always'][1] / rates['everysec'][1]:.0%}",
    )
    for name in ("web-always", "redis-always"):
        processes.processes.pop(name).stop()


if __name__ == "__main__":
    main()
