"""`lead-poller demo`: the real job, end to end, against the built-in sandbox.

Starts both emulators, seeds about 50 users and a few hundred log events of mixed types, and runs two
cycles through `App`, the production wiring (config file + environment -> adapters over HTTPS with a
CA bundle). The second cycle shows that nothing is duplicated. Then it checks the outcome against the
scenario's own truth and exits non-zero if anything is off.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

from poller import config as config_module
from poller import logs
from poller.app import App
from poller.errors import ExitCode
from poller.pipeline import CycleReport
from poller.sandbox import Sandbox
from poller.sandbox.scenario import demo_scenario


def _line(label: str, value: object) -> str:
    return f"  {label:<34} {value}"


def _print_cycle(title: str, report: CycleReport) -> None:
    s = report.summary()
    print(f"\n{title}")
    print(_line("log events read", s["events_read"]))
    print(_line("login events", s["login_events"]))
    print(_line("new users in the ledger", s["new_users"]))
    print(_line("leads created", s["leads_created"]))
    print(_line("leads reused (already in Salesforce)", s["leads_reused"]))
    print(_line("already flagged (no Salesforce call)", s["already_flagged"]))
    print(_line("users flagged in Auth0", s["written_back"]))
    skipped = ", ".join(f"{k}: {v}" for k, v in sorted(s["skipped"].items())) or "none"
    print(_line("skipped, by reason", skipped))
    failed = ", ".join(f"{k}: {v}" for k, v in sorted(s["failed"].items())) or "none"
    print(_line("failed", failed))
    print(_line("outcome", f"{report.outcome} ({s['duration_seconds']} s)"))


def run_demo(keep: Path | None = None) -> ExitCode:
    with tempfile.TemporaryDirectory(prefix="lead-poller-demo-") as scratch:
        workdir = keep or Path(scratch)
        with Sandbox(workdir) as sandbox:
            scenario = demo_scenario()
            sandbox.auth0.add_users(scenario.users)
            sandbox.auth0.add_logs(scenario.logs)
            state = workdir / "state.db"
            if state.exists():
                for leftover in workdir.glob("state.db*"):
                    leftover.unlink()
            config_path = sandbox.write_config(state_path=state, auth0={"start_from": "oldest"})
            config = config_module.load(config_path, environ={**os.environ, **sandbox.env()})
            logs.configure(level="warning", pii=config.logging.pii, secret_values=config.secrets(), stream=sys.stderr)

            print("lead-poller demo: the production code path against the built-in sandbox")
            print(_line("Auth0 emulator", f"https://{sandbox.auth0.host}"))
            print(_line("Salesforce emulator", f"https://{sandbox.salesforce.host}"))
            print(_line("seeded", f"{len(scenario.users)} users, {len(scenario.logs)} log events"))
            types = Counter(e.get("type") for e in scenario.logs)
            print(_line("event types", ", ".join(f"{t}: {n}" for t, n in types.most_common())))

            with App(config) as app:
                first = app.run_cycle()
                _print_cycle("Cycle 1", first)
                second = app.run_cycle()
                _print_cycle("Cycle 2 (nothing new: nothing must be duplicated)", second)

            problems = _check(sandbox, scenario, first, second)
            print()
            if problems:
                for problem in problems:
                    print(f"  CHECK FAILED: {problem}")
                return ExitCode.ERROR
            leads = len(sandbox.salesforce.leads)
            print(f"OK: {leads} leads in Salesforce, one per eligible user; every one flagged in Auth0; no duplicates.")
            if keep:
                print(f"Sandbox files kept in {workdir} (config.toml, sandbox-ca.pem, state.db).")
            return ExitCode.OK


def _check(sandbox: Sandbox, scenario, first: CycleReport, second: CycleReport) -> list[str]:
    problems = []
    eligible = set(scenario.expected["eligible_user_ids"])
    leads = list(sandbox.salesforce.leads.values())
    emails = Counter((lead.get("Email") or "").lower() for lead in leads)
    duplicated = [email for email, n in emails.items() if n > 1]
    if duplicated:
        problems.append(f"{len(duplicated)} emails have more than one lead")
    flagged = {uid for uid, user in sandbox.auth0.users.items() if (user.get("app_metadata") or {}).get("recordedAsLead") is True}
    missing = eligible - flagged
    if missing:
        problems.append(f"{len(missing)} eligible users were not flagged")
    if first.leads_created + first.leads_reused < 1:
        problems.append("the first cycle created no lead")
    if second.leads_created or second.users_worked:
        problems.append("the second cycle worked users again")
    if first.exit_code or second.exit_code:
        problems.append(f"exit codes {int(first.exit_code)}, {int(second.exit_code)}")
    return problems
