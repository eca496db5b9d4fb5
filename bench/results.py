"""`make bench`'s figures, kept: one JSON object per run appended to bench/results.jsonl, and the
latest run set against the targets of DESIGN.md as a Markdown table (`python -m bench.report`).

Documented in docs/benchmarks.md.
"""

import datetime
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = ROOT / "bench" / "results.jsonl"

# What this run measured so far, by name (the names TARGETS reads); bench modules record()
# beside each report line, and main() appends the whole at the end of a run.
figures: dict[str, float] = {}


def record(name: str, value: float) -> None:
    figures[name] = float(value)


def git_commit() -> str:
    """The short commit the run measured, with "+dirty" when the work tree has changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty.stdout.strip() else "")


def run_append(path: Path, measured: dict[str, float], source: str = "make bench") -> dict[str, Any]:
    """Append one run (its date, commit, source and figures) to the results file."""
    run = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%MZ"),
        "commit": git_commit(),
        "source": source,
        "figures": dict(sorted(measured.items())),
    }
    with path.open("a", encoding="utf-8") as results:
        results.write(json.dumps(run, ensure_ascii=False) + "\n")
    return run


def runs_read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass(frozen=True)
class Target:
    what: str
    target: str
    shown: Callable[[dict[str, float]], str]
    met: Callable[[dict[str, float]], bool]
    needs: tuple[str, ...]


def _pct(value: float) -> str:
    return f"{value:.1%}"


def _backlog_bounded(measured: dict[str, float]) -> bool:
    """The backlog does not grow: its mean over the run's last third is at most twice that over
    its first (plus a batch's worth of slack for a near-empty backlog). A run recorded without
    the thirds is judged by its p99 alone."""
    first, last = measured.get("end_to_end_backlog_first_third"), measured.get("end_to_end_backlog_last_third")
    return first is None or last is None or last <= 2 * first + 5_000


# DESIGN.md's targets table, row by row, with the figures that decide each.
TARGETS: tuple[Target, ...] = (
    Target(
        "single-message accept rate / no-op Django view",
        "at least 60%; p99 under 20 ms at half load",
        lambda f: f"{_pct(f['write_noop_ratio'])}; p99 {f['write_p99_ms']:.1f} ms",
        lambda f: f["write_noop_ratio"] >= 0.6 and f["write_p99_ms"] < 20,
        ("write_noop_ratio", "write_p99_ms"),
    ),
    Target(
        "batch accept rate",
        "at least 50,000 messages/s",
        lambda f: f"{f['batch_rate']:,.0f} messages/s",
        lambda f: f["batch_rate"] >= 50_000,
        ("batch_rate",),
    ),
    Target(
        "persist rate, one worker process",
        "at least 30,000 messages/s, rollups included",
        lambda f: f"{f['persist_rate']:,.0f} messages/s",
        lambda f: f["persist_rate"] >= 30_000,
        ("persist_rate",),
    ),
    Target(
        "stats publish at 10 million messages",
        "under 0.5 s, and under 2x the time at 10 thousand",
        lambda f: f"{f['publish_large_s'] * 1000:,.1f} ms; {f['publish_large_s'] / f['publish_small_s']:.2f}x",
        lambda f: f["publish_large_s"] < 0.5 and f["publish_large_s"] / f["publish_small_s"] < 2,
        ("publish_large_s", "publish_small_s"),
    ),
    Target(
        "end to end at 80% of peak, 60 s",
        "backlog bounded; p99 accept-to-stored under 2 s",
        lambda f: f"p99 {f['end_to_end_p99_s'] * 1000:,.0f} ms; backlog at most {f['end_to_end_backlog_max']:,.0f}",
        lambda f: f["end_to_end_p99_s"] < 2 and _backlog_bounded(f),
        ("end_to_end_p99_s", "end_to_end_backlog_max"),
    ),
    Target(
        "front door: writes with 200 slow clients; its cost",
        "p99 under 100 ms; at most 10% of the accept rate",
        lambda f: f"p99 {f['front_slow_p99_ms']:.1f} ms; front / direct {_pct(f['front_direct_ratio'])}",
        lambda f: f["front_slow_p99_ms"] < 100 and f["front_direct_ratio"] >= 0.9,
        ("front_slow_p99_ms", "front_direct_ratio"),
    ),
    Target(
        "per-client quota check (its own share)",
        "costs at most 5% of the accept rate",
        lambda f: f"on / off {_pct(f['quota_own_share'])}",
        lambda f: f["quota_own_share"] >= 0.95,
        ("quota_own_share",),
    ),
    Target(
        "single write, lean path / no-op Django view",
        "at least 100%",
        lambda f: _pct(f["write_noop_ratio"]),
        lambda f: f["write_noop_ratio"] >= 1.0,
        ("write_noop_ratio",),
    ),
    Target(
        "persist rate / one process's COPY ceiling",
        "at least 50%, rollups included",
        lambda f: f"{_pct(f['persist_rate'] / f['copy_ceiling'])} ({f['copy_ceiling']:,.0f} rows/s ceiling)",
        lambda f: f["persist_rate"] / f["copy_ceiling"] >= 0.5,
        ("persist_rate", "copy_ceiling"),
    ),
    Target(
        "worker hosts, each held to a CPU share (`make bench-hosts`)",
        "8 hosts / 1 host at least 6",
        lambda f: f"{f['worker_hosts']:.0f} hosts / 1 host {f['worker_hosts_ratio']:.2f}",
        lambda f: f["worker_hosts"] >= 8 and f["worker_hosts_ratio"] >= 6,
        ("worker_hosts", "worker_hosts_ratio"),
    ),
)


def report_render(run: dict[str, Any]) -> str:
    """The run against every target, as Markdown: figures a run did not measure say so."""
    measured = run["figures"]
    lines = [
        f"Latest run: {run['date']}, commit `{run['commit']}` ({run['source']}).",
        "",
        "| target (DESIGN.md) | measured | target | status |",
        "| --- | --- | --- | --- |",
    ]
    for target in TARGETS:
        if all(name in measured for name in target.needs):
            shown, status = target.shown(measured), "met" if target.met(measured) else "**not met**"
        else:
            shown, status = "not measured in this run", "-"
        lines.append(f"| {target.what} | {shown} | {target.target} | {status} |")
    return "\n".join(lines) + "\n"
