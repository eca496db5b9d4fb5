"""Bisect gunicorn releases: the no-op and single-write rates of one gunicorn per variant, all
running at once and measured in alternating turns (rate and the web processes' CPU per request), so a shared
machine's drift falls on every variant alike. A variant is LABEL=SITE[,WORKER]: SITE a folder
holding a gunicorn (pip install --target SITE gunicorn==X), WORKER an optional worker class
(module on SITE's path) instead of project.gunicorn_worker's. Run through scripts/bench.sh with
BENCH_MODULE=bench.gunicorn_versions; docs/dependencies.md has the figures.
"""

import argparse
import dataclasses
import functools
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bench import cpu
from bench.__main__ import UNBOUND_QUOTA, memcached_start
from bench.http import MESSAGE, wrk_rate
from tests.harness import BENCH, ProcessGroup, database_create, free_port, redis_reset, wait_for_port

# A database and key namespace of its own: a full make bench may run on this machine meanwhile.
VERSIONS = dataclasses.replace(BENCH, database="messy_bench_versions", key_prefix="messy-bench-versions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", help="LABEL=SITE[,WORKER]; the first is the base of the ratios")
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--syscalls", type=int, default=0, help="count system calls over N no-op requests instead")
    parser.add_argument("--web-processes", type=int, default=2)
    args = parser.parse_args()
    database_create(VERSIONS)
    redis_reset(VERSIONS)
    processes = ProcessGroup(VERSIONS.env(MESSY_QUOTA_RATE=UNBOUND_QUOTA, MESSY_QUOTA_BURST=UNBOUND_QUOTA))
    body = json.dumps(MESSAGE)
    try:
        processes.env["MEMCACHED_SERVERS"] = memcached_start(processes)
        urls: dict[str, str] = {}
        labels = []
        for variant in args.variants:
            label, _, spec = variant.partition("=")
            site, _, worker = spec.partition(",")
            port = free_port()
            command = ["./runserver.sh", *(["--worker-class", worker] if worker else [])]
            socket = Path(tempfile.mkdtemp(prefix="messy-web-")) / "web.sock"
            processes.start(
                f"web-{label}",
                command,
                MESSY_BIND=f"127.0.0.1:{port}",
                MESSY_SOCKET=str(socket),
                WEB_PROCESSES=str(args.web_processes),
                PYTHONPATH=site,
            )
            wait_for_port(port, timeout=60)
            labels.append(label)
            for path in ("noop", "write"):
                url = f"http://127.0.0.1:{port}/message/{path}/"
                wrk_rate(url, body, 1)  # warm up every process
                urls[f"{label} {path}"] = url
        if args.syscalls:
            for label in labels:
                syscalls_per_request(
                    label, processes.processes[f"web-{label}"].pid, urls[f"{label} noop"], body, args.syscalls
                )
            return
        # Each variant's web processes' CPU per request too: on a shared machine it moves less
        # than a rate, which the other tenants' load takes its share of.
        meters = {
            label: functools.partial(cpu.process_group_cpu, processes.processes[f"web-{label}"].pid) for label in labels
        }
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in urls}
        for _ in range(args.turns):
            for name, url in urls.items():
                label = name.rsplit(" ", 1)[0]
                rate, used = cpu.cpu_per_request(url, body, args.seconds, {"web": meters[label]})
                runs[name].append((rate, used["web"]))
        mean = {
            name: tuple(sum(values) / len(values) for values in zip(*turns, strict=True))
            for name, turns in runs.items()
        }
        base = labels[0]
        for label in labels:
            figures = []
            for path in ("noop", "write"):
                (rate, micros), (base_rate, base_micros) = mean[f"{label} {path}"], mean[f"{base} {path}"]
                figures.append(
                    f"{path} {rate:7,.0f} req/s ({rate / base_rate:6.1%}), web CPU {micros:5,.0f} µs"
                    f" ({micros / base_micros:6.1%})"
                )
            print(f"{label:<16} " + "   ".join(figures), flush=True)
    finally:
        processes.stop_all()


def syscalls_per_request(label: str, pgid: int, url: str, body: str, requests: int) -> None:
    """The system calls gunicorn's worker processes make per request (strace -c on each), and
    the wall time spent inside the slowest. Counts, unlike rates, do not move with the load of
    others sharing the machine."""
    workers = [
        pid
        for pid in os.listdir("/proc")
        if pid.isdigit() and int(pid) != pgid and os.getpgid(int(pid)) == pgid and _is_gunicorn(pid)
    ]
    with tempfile.NamedTemporaryFile(suffix=".strace") as out:
        tracer = subprocess.Popen(
            ["strace", "-f", "-c", "-w", "-o", out.name, *(arg for pid in workers for arg in ("-p", pid))],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)  # attached
        command = ["hey", "-n", str(requests), "-c", "2", "-m", "POST", "-T", "application/json", "-d", body, url]
        subprocess.run(command, capture_output=True, check=True)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
        rows = [line.split() for line in Path(out.name).read_text().splitlines()]
    # strace -c -w: % time, seconds (wall, in the call), usecs/call, calls, [errors,] syscall.
    rows = [fields for fields in rows if len(fields) >= 5 and fields[3].isdigit()]
    calls = {fields[-1]: int(fields[3]) / requests for fields in rows if fields[-1] != "total"}
    waits = {fields[-1]: float(fields[1]) * 1e6 / requests for fields in rows if fields[-1] != "total"}
    detail = ", ".join(f"{name} {count:.2f}" for name, count in sorted(calls.items()))
    slowest = ", ".join(
        f"{name} {waits[name]:,.0f}" for name in sorted(waits, key=lambda name: waits[name], reverse=True)[:3]
    )
    print(f"{label:<16} {sum(calls.values()):5.1f} system calls per request: {detail}", flush=True)
    print(f"{'':<16} µs per request inside the slowest: {slowest}", flush=True)


def _is_gunicorn(pid: str) -> bool:
    try:
        return "gunicorn" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


if __name__ == "__main__":
    main()
