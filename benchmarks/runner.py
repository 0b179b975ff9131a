"""Running lead-poller itself for a benchmark: the real CLI (`--run-once`) in a child process, so wall
time includes process start and the peak RSS is the poller's alone (the emulators stay in this
process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poller.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[1]


@dataclass
class PollerRun:
    exit_code: int
    wall_seconds: float
    peak_rss_mb: float
    summary: dict[str, Any] = field(default_factory=dict)  # the cycle_finished log line


def write_config(sandbox: Sandbox, state: Path, *, concurrency: int, **work: Any) -> Path:
    """The sandbox's config, with a deadline long enough that one cycle drains the whole backlog.

    The state starts before the first log (`start_from` a log_id: "right after it"), so the whole
    backlog is read by checkpoint, as the naive baseline reads it. ("oldest" finds its start by a
    date-sorted log search, whose first event need not be the first by log_id.)
    """
    return sandbox.write_config(
        sandbox.workdir / "config.toml",
        state_path=state,
        auth0={"start_from": "0"},
        schedule={"interval_seconds": 3600},
        http={"timeout_seconds": 30},
        work={"concurrency": concurrency, **work},
    )


def run_once(sandbox: Sandbox, config: Path, log: Path, *, timeout: float = 1800) -> PollerRun:
    """`python -m poller --config CONFIG --run-once`, started by `benchmarks.launch`; output in `log`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH0_", "SALESFORCE_"))}
    env.update(sandbox.env())
    command = [sys.executable, "-m", "poller", "--config", str(config), "--run-once"]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.launch", str(log), "--", *command],
        capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL, cwd=REPO,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the benchmark launcher failed: {done.stderr.strip()}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    summary: dict[str, Any] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        if line.startswith("{") and '"cycle_finished"' in line:
            summary = json.loads(line)
    return PollerRun(
        exit_code=measured["exit_code"],
        wall_seconds=measured["wall_seconds"],
        peak_rss_mb=measured["peak_rss_kib"] / 1024,
        summary=summary,
    )
