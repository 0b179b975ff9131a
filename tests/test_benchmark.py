"""A small run of `make bench`'s harness: it runs, counts, and reports every figure in one JSON line.

The full benchmark is not part of the suite (it takes minutes); this keeps the harness working.
"""

from __future__ import annotations

import json

from benchmarks.main import main


def test_benchmark_harness_reports_calls_ratios_and_targets(tmp_path, capsys):
    code = main([
        "--events", "400", "--users", "60", "--need-lead", "15",
        "--steady-events", "400", "--new-share", "0.05",
        "--scenarios", "default,steady,startup", "--keep", str(tmp_path),
    ])

    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and result["problems"] == [], out
    default, steady = result["default"], result["steady"]
    assert default["ours"]["leads_created"] == 15 == default["naive"]["leads_created"]
    assert steady["ours"]["leads_created"] == 10 == steady["naive"]["leads_created"]
    # Both read every log page by checkpoint: 4 pages and the empty one.
    assert default["naive"]["calls"]["auth0_logs"] == 5 == default["ours"]["calls"]["auth0_logs"]
    assert default["naive"]["calls"]["auth0_users_read"] == 200  # one read per login event
    assert default["minimum"]["calls_total"] == sum(default["minimum"]["calls"].values())
    assert default["naive_per_ours"] == round(default["naive"]["calls_total"] / default["ours"]["calls_total"], 2)
    assert result["startup"]["calls"] == 2  # nothing to do: a token and one empty log page
    assert {"default_calls_per_minimum", "steady_naive_per_ours", "idle_run_once_seconds"} <= set(result["targets"])
    assert "ours / minimum" in out and "ours / naive" in out
