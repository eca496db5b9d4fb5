"""Where a request's CPU goes under load, read from /proc: the CPU time each of the benchmark's
server processes (the web server's process group, Redis, memcached) and the whole machine
(the load tool and the kernel included) spend during one wrk run, divided by the requests it
answered. On a machine whose cores the load tool and the servers share, a rate is the inverse
of this total, so the per-process figures say what makes one endpoint faster than another."""

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from bench.http import wrk_rate

_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: str, pgid: int | None = None) -> float:
    """CPU seconds (user and system) of process `pid` so far; 0 when it is gone, or when it is
    not in process group `pgid` (if given)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone meanwhile
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()  # fields from the state on (the name may hold spaces)
    if pgid is not None and int(fields[2]) != pgid:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def process_group_cpu(pgid: int) -> float:
    """CPU seconds of the live processes of process group `pgid`."""
    return sum(_cpu_seconds(pid, pgid) for pid in os.listdir("/proc") if pid.isdigit())


def process_cpu(pid: int) -> float:
    return _cpu_seconds(str(pid))


def machine_cpu() -> float:
    """CPU seconds the machine's cores were busy (everything but idle and I/O wait)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def cpu_per_request(
    url: str, body: str, seconds: int, meters: Mapping[str, Callable[[], float]]
) -> tuple[float, dict[str, float]]:
    """One wrk run against `url`: its rate, and the µs of CPU per answered request of each meter
    (name: a function returning CPU seconds so far) and of the machine."""
    meters = {**meters, "machine": machine_cpu}
    before = {name: meter() for name, meter in meters.items()}
    rate, _ = wrk_rate(url, body, seconds)
    requests = rate * seconds
    return rate, {name: (meter() - before[name]) / requests * 1e6 for name, meter in meters.items()}
