"""`python -m benchmarks`: seed the sandbox, run lead-poller's real code path, count every call.

Scenarios (each can be switched off; see --help):
- default: a backlog of --events log events (about half of them logins) from --users users, of whom
  --need-lead need a lead and the rest were flagged by an earlier tool; cold ledger.
- steady: the same tenant a day later, ledger warm: --steady-events new events, --new-share of them
  from users never seen before.
- rate-limited: the default scenario against Auth0 token-bucket limits (Essentials plan) sped up by
  --time-scale; wall time against the rate-limit bound, and the 429s received.
- memory: peak RSS with --memory-events events against the default scenario's.
- startup: `--run-once` with nothing to do, process start included.

The naive baseline (benchmarks/naive.py) runs the default and steady scenarios on a sandbox of its own.
Prints a table, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from benchmarks.measure import ENDPOINTS, Minimum, count_429, count_calls, login_users, rate_limit_bound, reset_counts
from benchmarks.naive import NaivePoller
from benchmarks.runner import PollerRun, run_once, write_config
from poller.sandbox import Sandbox
from poller.sandbox.auth0 import RateLimits
from poller.sandbox.scenario import LOGIN_TYPES, BenchScenario, bench_scenario, day_later_scenario

SCENARIOS = ("default", "steady", "rate-limited", "memory", "startup")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=20_000, help="log events in the default scenario (default 20000)")
    p.add_argument("--users", type=int, default=5_000, help="users in the tenant (default 5000)")
    p.add_argument("--need-lead", type=int, default=1_000, help="users not flagged yet (default 1000)")
    p.add_argument("--steady-events", type=int, default=20_000, help="new events a day later (default 20000)")
    p.add_argument("--new-share", type=float, default=0.01, help="share of those from never-seen users (default 0.01)")
    p.add_argument("--memory-events", type=int, default=200_000, help="events of the memory scenario (default 200000)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added to every API response of both emulators (default 0)")
    p.add_argument("--concurrency", type=int, default=4, help="[work] concurrency of lead-poller and the naive baseline (default 4)")
    p.add_argument("--time-scale", type=float, default=4.0, help="speed-up of the emulated rate limits (default 4; see README)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep the sandboxes' files (configs, state, logs) in DIR")
    return p


class Bench:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.results: dict[str, Any] = {"parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
        self.problems: list[str] = []

    # --- sandboxes ------------------------------------------------------------------------------

    def sandbox(self, name: str, scenario: BenchScenario, **auth0: Any) -> Sandbox:
        sandbox = Sandbox(self.root / name, auth0=auth0 or None)
        sandbox.auth0.add_users(scenario.users)
        sandbox.auth0.add_logs(scenario.events())
        sandbox.auth0.latency = sandbox.salesforce.latency = self.args.latency_ms / 1000
        return sandbox

    def ours(self, sandbox: Sandbox, label: str, **work: Any) -> dict[str, Any]:
        """One `--run-once` of lead-poller against `sandbox`; what it cost and what it did."""
        config = write_config(sandbox, sandbox.workdir / "state.db", concurrency=self.args.concurrency, **work)
        reset_counts(sandbox)
        leads_before = len(sandbox.salesforce.leads)
        run: PollerRun = run_once(sandbox, config, sandbox.workdir / f"{label}.log")
        if run.exit_code != 0:
            self.problems.append(f"{label}: lead-poller exited {run.exit_code} (see {sandbox.workdir / (label + '.log')})")
        return {
            "calls": count_calls(sandbox),
            "calls_total": sum(count_calls(sandbox).values()),
            "wall_seconds": round(run.wall_seconds, 2),
            "peak_rss_mb": round(run.peak_rss_mb, 1),
            "leads_created": len(sandbox.salesforce.leads) - leads_before,
            "exit_code": run.exit_code,
            "status_429": count_429(sandbox),
            "users_failed": sum((run.summary.get("failed") or {}).values()),
        }

    def naive(self, sandbox: Sandbox, poller: NaivePoller) -> dict[str, Any]:
        reset_counts(sandbox)
        leads_before = len(sandbox.salesforce.leads)
        started = time.perf_counter()
        poller.run(start_from="0")
        calls = count_calls(sandbox)
        return {
            "calls": calls,
            "calls_total": sum(calls.values()),
            "wall_seconds": round(time.perf_counter() - started, 2),
            "leads_created": len(sandbox.salesforce.leads) - leads_before,
        }

    def check(self, label: str, sandbox: Sandbox, eligible: Sequence[str]) -> None:
        """The run must also be right: every eligible user flagged, one lead per email."""
        users = sandbox.auth0.users
        unflagged = [u for u in eligible if (users[u].get("app_metadata") or {}).get("recordedAsLead") is not True]
        emails = Counter((lead.get("Email") or "").lower() for lead in sandbox.salesforce.leads.values())
        duplicated = [e for e, n in emails.items() if n > 1]
        if unflagged:
            self.problems.append(f"{label}: {len(unflagged)} eligible users were not flagged")
        if duplicated:
            self.problems.append(f"{label}: {len(duplicated)} emails have more than one lead")

    # --- scenarios ------------------------------------------------------------------------------

    def run(self, wanted: set[str]) -> None:
        a = self.args
        base = bench_scenario(a.events, a.users, a.need_lead, seed=a.seed)
        base_logins = login_users(base.events(), LOGIN_TYPES)
        need = set(base.need_lead_ids)
        minimum = Minimum(a.events, unknown_users=len(base_logins), need_lead=sum(1 for u in base_logins if u in need))

        ours_box = naive_box = None
        try:
            if wanted & {"default", "steady", "startup", "memory"}:
                ours_box = self.sandbox("ours", base)
                ours = self.ours(ours_box, "default")
                self.check("default", ours_box, base.need_lead_ids)
                entry: dict[str, Any] = {"ours": ours, "minimum": {"calls": minimum.parts(), "calls_total": minimum.total}}
                if "default" in wanted or "steady" in wanted:
                    naive_box = self.sandbox("naive", base)
                    naive_poller = NaivePoller(naive_box, login_types=LOGIN_TYPES, concurrency=a.concurrency)
                    entry["naive"] = self.naive(naive_box, naive_poller)
                    entry["ours_per_minimum"] = round(ours["calls_total"] / minimum.total, 3)
                    entry["naive_per_ours"] = round(entry["naive"]["calls_total"] / ours["calls_total"], 2)
                self.results["default"] = entry

            if "steady" in wanted and ours_box is not None and naive_box is not None:
                day = day_later_scenario(base, a.steady_events, a.new_share, seed=a.seed + 1)
                day_logins = login_users(day.events(), LOGIN_TYPES)
                known = set(base_logins)
                unknown = [u for u in day_logins if u not in known]
                day_need = set(day.need_lead_ids)
                day_min = Minimum(a.steady_events, unknown_users=len(unknown), need_lead=sum(1 for u in unknown if u in day_need))
                for box in (ours_box, naive_box):
                    box.auth0.add_users(day.users)
                    box.auth0.add_logs(day.events())
                ours = self.ours(ours_box, "steady")
                self.check("steady", ours_box, [*base.need_lead_ids, *day.need_lead_ids])
                naive = self.naive(naive_box, naive_poller)
                self.results["steady"] = {
                    "ours": ours,
                    "naive": naive,
                    "minimum": {"calls": day_min.parts(), "calls_total": day_min.total},
                    "ours_per_minimum": round(ours["calls_total"] / day_min.total, 3),
                    "naive_per_ours": round(naive["calls_total"] / ours["calls_total"], 2),
                }

            if "startup" in wanted and ours_box is not None:
                runs = [self.ours(ours_box, f"startup-{i}") for i in range(3)]
                self.results["startup"] = {
                    "wall_seconds": [r["wall_seconds"] for r in runs],
                    "median_seconds": statistics.median(r["wall_seconds"] for r in runs),
                    "calls": runs[-1]["calls_total"],
                }
        finally:
            for box in (ours_box, naive_box):
                if box is not None:
                    box.close()
            if naive_box is not None:
                naive_poller.close()

        if "rate-limited" in wanted:
            limits = RateLimits.essentials(time_scale=a.time_scale)
            box = self.sandbox("rate-limited", base, rate_limits=limits)
            try:
                ours = self.ours(box, "rate-limited")
                self.check("rate-limited", box, base.need_lead_ids)
                bound = rate_limit_bound(count_calls(box, without_429=True), limits)
            finally:
                box.close()
            self.results["rate_limited"] = {
                "ours": ours,
                "plan": "essentials",
                "time_scale": a.time_scale,
                "bound_seconds": {k: round(v, 2) for k, v in bound.items()},
                "wall_per_bound": round(ours["wall_seconds"] / bound["bound"], 3) if bound["bound"] else None,
            }

        if "memory" in wanted and a.memory_events and "default" in self.results:
            big = bench_scenario(a.memory_events, a.users, a.need_lead, seed=a.seed)
            box = self.sandbox("memory", big)
            try:
                ours = self.ours(box, "memory")
                self.check("memory", box, big.need_lead_ids)
            finally:
                box.close()
            small_rss = self.results["default"]["ours"]["peak_rss_mb"]
            self.results["memory"] = {
                "events": a.memory_events,
                "ours": ours,
                "peak_rss_mb": {str(a.events): small_rss, str(a.memory_events): ours["peak_rss_mb"]},
                "rss_ratio": round(ours["peak_rss_mb"] / small_rss, 3),
            }

    # --- targets and output ---------------------------------------------------------------------

    def targets(self) -> dict[str, dict[str, Any]]:
        r, out = self.results, {}

        def target(name: str, value: Any, limit: str, met: bool) -> None:
            out[name] = {"value": value, "target": limit, "met": bool(met)}

        if "naive" in r.get("default", {}):
            target("default_calls_per_minimum", r["default"]["ours_per_minimum"], "<= 1.05", r["default"]["ours_per_minimum"] <= 1.05)
            target("default_naive_per_ours", r["default"]["naive_per_ours"], ">= 2", r["default"]["naive_per_ours"] >= 2)
        if "steady" in r:
            target("steady_calls_per_minimum", r["steady"]["ours_per_minimum"], "<= 1.05", r["steady"]["ours_per_minimum"] <= 1.05)
            target("steady_naive_per_ours", r["steady"]["naive_per_ours"], ">= 20", r["steady"]["naive_per_ours"] >= 20)
        if "rate_limited" in r:
            rl = r["rate_limited"]
            target("rate_limited_wall_per_bound", rl["wall_per_bound"], "<= 1.2", rl["wall_per_bound"] is not None and rl["wall_per_bound"] <= 1.2)
            target("users_failed_by_429", rl["ours"]["users_failed"], "0", rl["ours"]["users_failed"] == 0)
        if "memory" in r:
            target("rss_200k_per_20k", r["memory"]["rss_ratio"], "<= 1.2", r["memory"]["rss_ratio"] <= 1.2)
        if "startup" in r:
            target("idle_run_once_seconds", r["startup"]["median_seconds"], "< 1.5", r["startup"]["median_seconds"] < 1.5)
        return out

    def print_table(self) -> None:
        a, r = self.args, self.results
        print(f"lead-poller benchmark: {a.events:,} events, {a.users:,} users, {a.need_lead:,} need a lead; "
              f"latency {a.latency_ms:g} ms; concurrency {a.concurrency}")
        columns: list[tuple[str, dict[str, Any]]] = []
        for scenario in ("default", "steady"):
            for who in ("ours", "naive", "minimum"):
                if who in r.get(scenario, {}):
                    columns.append((f"{scenario}:{who}", r[scenario][who]))
        if "rate_limited" in r:
            columns.append(("rate-limited:ours", r["rate_limited"]["ours"]))
        if "memory" in r:
            columns.append((f"{a.memory_events // 1000}k:ours", r["memory"]["ours"]))
        if columns:
            width = max(15, *(len(name) + 2 for name, _ in columns))
            print()
            print("API calls".ljust(24) + "".join(name.rjust(width) for name, _ in columns))
            for endpoint in ENDPOINTS:
                row = [str(col["calls"].get(endpoint, "")) for _, col in columns]
                if any(v not in ("", "0") for v in row):
                    print(endpoint.replace("_", " ").ljust(24) + "".join(v.rjust(width) for v in row))
            print("total".ljust(24) + "".join(str(col["calls_total"]).rjust(width) for _, col in columns))
            for label, key in (("wall time (s)", "wall_seconds"), ("peak RSS (MB)", "peak_rss_mb"), ("leads created", "leads_created"), ("429 answers", "status_429")):
                print(label.ljust(24) + "".join(str(col.get(key, "")).rjust(width) for _, col in columns))
        print()
        for scenario in ("default", "steady"):
            if "ours_per_minimum" in r.get(scenario, {}):
                s = r[scenario]
                print(f"{scenario}: ours / minimum = {s['ours_per_minimum']:.3f}   ours / naive = {1 / s['naive_per_ours']:.3f} "
                      f"({s['naive_per_ours']:.1f}x fewer calls than naive)")
        if "rate_limited" in r:
            rl = r["rate_limited"]
            groups = ", ".join(f"{k} {v} s" for k, v in rl["bound_seconds"].items() if k != "bound")
            print(f"rate-limited (Essentials, time scale {rl['time_scale']:g}): wall {rl['ours']['wall_seconds']} s, bound "
                  f"{rl['bound_seconds']['bound']} s ({groups}): wall / bound = {rl['wall_per_bound']}; "
                  f"429s received {rl['ours']['status_429']}; users failed {rl['ours']['users_failed']}")
        if "memory" in r:
            m = r["memory"]
            print(f"memory: peak RSS {m['peak_rss_mb'][str(a.events)]} MB at {a.events:,} events, "
                  f"{m['peak_rss_mb'][str(a.memory_events)]} MB at {a.memory_events:,}: ratio {m['rss_ratio']}")
        if "startup" in r:
            st = r["startup"]
            print(f"startup: --run-once with nothing to do: {st['median_seconds']} s median of {st['wall_seconds']} "
                  f"(process start included), {st['calls']} API calls")
        targets = self.results.get("targets", {})
        if targets:
            print()
            for name, t in targets.items():
                print(f"  {'met    ' if t['met'] else 'MISSED '} {name}: {t['value']} (target {t['target']})")
        for problem in self.problems:
            print(f"  PROBLEM {problem}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    wanted = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    unknown = wanted - set(SCENARIOS)
    if unknown:
        print(f"python -m benchmarks: unknown scenario {', '.join(sorted(unknown))} (known: {', '.join(SCENARIOS)})", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="lead-poller-bench-") as scratch:
        root = args.keep or Path(scratch)
        bench = Bench(args, root)
        bench.run(wanted)
        bench.results["targets"] = bench.targets()
        bench.results["problems"] = bench.problems
        bench.print_table()
        print(json.dumps(bench.results, sort_keys=True))
    return 1 if bench.problems else 0
