"""bench.report: docs/benchmarks.md's table is rebuilt from a results file (bench/results.jsonl)."""

import json
from pathlib import Path

import pytest

from bench import results
from bench.report import BEGIN, END, PAGE, page_update

PAGE_TEMPLATE = f"# Benchmarks\n\nprose before\n\n{BEGIN}\nstale table\n{END}\n\nprose after\n"


def _results_file(tmp_path: Path, *runs: dict[str, float]) -> Path:
    path = tmp_path / "results.jsonl"
    for figures in runs:
        results.run_append(path, figures)
    return path


def test_it_shows_the_latest_run_against_each_target(tmp_path: Path) -> None:
    path = _results_file(tmp_path, {"batch_rate": 10_000}, {"batch_rate": 83_340, "persist_rate": 20_000})

    page = page_update(PAGE_TEMPLATE, path)

    assert "stale table" not in page
    assert page.startswith("# Benchmarks\n\nprose before\n") and page.endswith("prose after\n")
    assert "| batch accept rate | 83,340 messages/s | at least 50,000 messages/s | met |" in page
    assert "| persist rate, one worker process | 20,000 messages/s |" in page
    assert "**not met**" in page
    # A target whose figures the run did not measure says so rather than failing.
    assert "| stats publish at 10 million messages | not measured in this run |" in page
    assert page.count("\n| ") == len(results.TARGETS) + 2  # the header, its rule and one row per target


def test_it_appends_one_json_object_per_run_with_date_and_commit(tmp_path: Path) -> None:
    path = _results_file(tmp_path, {"batch_rate": 1.0}, {"batch_rate": 2.0})

    runs = [json.loads(line) for line in path.read_text().splitlines()]

    assert [run["figures"] for run in runs] == [{"batch_rate": 1.0}, {"batch_rate": 2.0}]
    assert all(run["date"] and run["commit"] and run["source"] == "make bench" for run in runs)


def test_it_refuses_a_page_without_the_generated_block(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="block"):
        page_update("# Benchmarks\n", _results_file(tmp_path, {"batch_rate": 1.0}))


def test_the_committed_page_matches_the_committed_results() -> None:
    page = PAGE.read_text(encoding="utf-8")

    assert page_update(page, results.RESULTS_FILE) == page, "run python -m bench.report"


def test_it_marks_a_growing_end_to_end_backlog_as_not_met(tmp_path: Path) -> None:
    end_to_end = {"end_to_end_p99_s": 0.01, "end_to_end_backlog_max": 90_000}
    steady = {**end_to_end, "end_to_end_backlog_first_third": 40, "end_to_end_backlog_last_third": 35}
    growing = {**end_to_end, "end_to_end_backlog_first_third": 1_000, "end_to_end_backlog_last_third": 60_000}

    assert "| end to end at 80% of peak, 60 s | p99 10 ms; backlog at most 90,000 |" in page_update(
        PAGE_TEMPLATE, _results_file(tmp_path, steady)
    )
    assert page_update(PAGE_TEMPLATE, _results_file(tmp_path, steady)).count("**not met**") == 0
    assert page_update(PAGE_TEMPLATE, _results_file(tmp_path, growing)).count("**not met**") == 1
