"""HTTP load against a real gunicorn running the project: wrk for peak rates, hey at a fixed
rate for latency at half load."""

import json
import re
import subprocess
import tempfile
from pathlib import Path

MESSAGE = {"username": "bench-user", "city": "Austin", "state": "TX", "message": "Hello from the benchmark."}


def _match(pattern: str, output: str) -> str:
    found = re.search(pattern, output)
    if not found:
        raise RuntimeError(f"unexpected load tool output:\n{output}")
    return found.group(1)


def _lua_post(body: str) -> str:
    return f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\nwrk.headers["Content-Type"] = "application/json"\n'


def wrk_rate(url: str, body: str, seconds: int, connections: int = 16) -> tuple[float, int]:
    """Requests per second at saturation, and how many answers were not 2xx."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_lua_post(body))
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", script.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    Path(script.name).unlink()
    rate = float(_match(r"Requests/sec:\s+([\d.]+)", output))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return rate, int(bad.group(1)) if bad else 0


def hey_latency(url: str, body: str, rate: float, seconds: int, workers: int = 8) -> dict[str, float]:
    """p50/p99 latency (ms) at a fixed total rate, spread over `workers` clients."""
    output = subprocess.run(
        [
            "hey",
            "-z",
            f"{seconds}s",
            "-c",
            str(workers),
            "-q",
            f"{max(1.0, rate / workers):.0f}",
            "-m",
            "POST",
            "-T",
            "application/json",
            "-d",
            body,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    percentiles = {int(p): float(s) * 1000 for p, s in re.findall(r"(\d+)%+ in ([\d.]+) secs", output)}
    achieved = float(_match(r"Requests/sec:\s+([\d.]+)", output))
    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", output))
    return {
        "p50": percentiles[50],
        "p99": percentiles[99],
        "rate": achieved,
        "non_202": sum(int(n) for code, n in codes.items() if code != "202"),
    }
