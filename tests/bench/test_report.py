"""tests/bench/report.py renders the doc's generated section from saved figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.bench import report


def _step(rate: float, passed: bool, daemon: float, sender: float, server: float) -> dict[str, Any]:
    total = daemon + sender + server
    return {
        "rate_target": rate,
        "sent": int(rate),
        "accepted": int(rate),
        "p99_arrival_to_commit_s": 0.5 if passed else 2.5,
        "daemon_cpu_us_per_heartbeat": daemon,
        "sender_cpu_us_per_heartbeat": sender,
        "db_server_cpu_us_per_heartbeat": server,
        "daemon_bound_per_s": round(1e6 / daemon),
        "cpu_bound_per_s": round(2e6 / total),
        "load_average": 1.0,
        "passed": passed,
    }


def _report() -> dict[str, Any]:
    seed = {
        "database": "postgresql",
        "shape": "seed: 1 listener, 2 members",
        "highest_clean_rate_per_s": 10000.0,
        "steps": [_step(10000, True, 50, 10, 40), _step(15000, False, 60, 10, 40)],
    }
    size = {
        "amphorae": 100000,
        "steady_us": 12.0,
        "steady_best_us": 9.0,
        "first_contact_us": 60.0,
        "rss_per_amphora": {"after_steady": 1200},
        "live_bytes_per_amphora": 1000,
    }
    return {
        "date": "2026-12-01",
        "commit": "abc1234",
        "load_before": 0.5,
        "throughput": {
            "machine": {"cpus": 2, "python": "3.11.7"},
            "runs": [seed],
            "limits": {
                "postgresql": {
                    "batch_rows": 30000,
                    "rows_per_s": 45000,
                    "heartbeats_per_s": 15000,
                    "rows_per_s_in_statements": 60000,
                }
            },
        },
        "receive": {"sizes": [size]},
    }


def test_the_target_row_divides_by_the_lowest_limit_of_the_highest_clean_step() -> None:
    rows = report.targets_table(_report())
    (seed,) = [r for r in rows if r.startswith("| seed heartbeats/s, postgresql")]
    # clean step: daemon 50 µs -> 20,000/s on one core; 100 µs on 2 cores -> 20,000/s;
    # the store alone 15,000/s is the lowest: 10,000 / 15,000.
    assert "≥ 15,000 | **10,000**" in seed
    assert "daemon on one core 20,000" in seed and "the store alone 15,000" in seed
    assert seed.endswith("| 0.67 |")
    (rss,) = [r for r in rows if "RSS per tracked amphora, 100,000" in r]
    assert "**1,200 B**" in rss and rss.endswith("| 1.20 |")


def test_the_block_between_the_markers_is_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Before\n\n{report.BEGIN}\nold figures\n{report.END}\n\n## After\n")
    report.splice(doc, report.render(_report(), [tmp_path / "performance-scaling.png"]))
    text = doc.read_text()
    assert text.startswith("# Before\n") and text.endswith("\n## After\n")
    assert "old figures" not in text
    assert "commit abc1234" in text and "![performance-scaling](performance-scaling.png)" in text
    assert "| postgresql, seed | 15,000 | 15,000/15,000 | 2.5 | 60 / 10 / 40 |" in text


def test_a_doc_without_markers_is_refused(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="report:begin"):
        report.splice(doc, "x")
    assert doc.read_text() == "# no markers\n"
