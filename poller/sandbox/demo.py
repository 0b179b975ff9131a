"""`lead-poller demo`: the real job, end to end, against the built-in sandbox.

Starts both emulators, seeds about 50 users and a few hundred log events of mixed types, and runs two
cycles through `App`, the production wiring (config file + environment -> adapters over HTTPS with a
CA bundle). Before the second cycle everyone who signed in signs in again; that cycle shows that
nothing is duplicated and that a user already in the ledger costs no API call. Then it checks the
outcome against the scenario's own truth and exits non-zero if anything is off.

`demo --rules` runs the same tenant under a non-default `[lead]` configuration (`RULES`: a mapping
from user_metadata and a custom field, verified email, consent, a denied domain and application,
existing contacts), and checks every lead against those rules, worked out here independently.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from poller import config as config_module
from poller import logs
from poller.app import App
from poller.ledger import RECHECK_ON_LOGIN
from poller.errors import ExitCode
from poller.pipeline import CycleReport
from poller.sandbox import COMPANY, Sandbox
from poller.sandbox.scenario import LOGIN_TYPES, Scenario, demo_scenario, log_event

DENIED_APPLICATION = "Acme iOS"
DENIED_DOMAIN = "example.org"
RULES = {
    "require_verified_email": True,
    "consent": "user_metadata.marketing_consent",
    "skip_existing_contacts": True,
    "deny_email_domains": [DENIED_DOMAIN],
    "deny_applications": [DENIED_APPLICATION],
    "fields": {
        "Company": {"from": "user_metadata.company"},
        "Title": "user_metadata.job_title",
        "LeadSource": {"value": "Web"},
        "Signup_Provider__c": "identities[0].provider",
    },
}
COMPANIES = ["Analytical Engines Ltd", "Difference Works", "Harvard Mark I Group"]


def _line(label: str, value: object) -> str:
    return f"  {label:<34} {value}"


def _print_cycle(title: str, report: CycleReport) -> None:
    s = report.summary()
    print(f"\n{title}")
    print(_line("log events read", s["events_read"]))
    print(_line("login events", s["login_events"]))
    print(_line("users to work (new, or re-checked)", s["new_users"]))
    print(_line("leads created", s["leads_created"]))
    print(_line("leads reused (already in Salesforce)", s["leads_reused"]))
    print(_line("already flagged (no Salesforce call)", s["already_flagged"]))
    print(_line("users flagged in Auth0", s["written_back"]))
    skipped = ", ".join(f"{k}: {v}" for k, v in sorted(s["skipped"].items())) or "none"
    print(_line("skipped, by reason", skipped))
    filtered = ", ".join(f"{k}: {v}" for k, v in sorted(s["logins_filtered"].items()))
    if filtered:
        print(_line("logins left out, by reason", filtered))
    failed = ", ".join(f"{k}: {v}" for k, v in sorted(s["failed"].items())) or "none"
    print(_line("failed", failed))
    print(_line("outcome", f"{report.outcome} ({s['duration_seconds']} s)"))


def _with_rules_data(scenario: Scenario) -> list[str]:
    """Give the demo users what the rules look at (deterministic, by position): a company for every
    third, a job title for every fifth, marketing consent for three in four. Returns the emails that
    the Salesforce org already holds as Contacts: two users the other rules would make leads."""
    for i, user in enumerate(scenario.users):
        metadata = user.setdefault("user_metadata", {})
        if i % 3 == 0:
            metadata["company"] = COMPANIES[i % len(COMPANIES)]
        if i % 5 == 0:
            metadata["job_title"] = "Head of Engineering"
        metadata["marketing_consent"] = i % 4 != 3
    by_id = {u["user_id"]: u for u in scenario.users}
    return [by_id[user_id]["email"] for user_id in sorted(_eligible_under_rules(scenario, []))[:2]]


def run_demo(keep: Path | None = None, rules: bool = False) -> ExitCode:
    with tempfile.TemporaryDirectory(prefix="lead-poller-demo-") as scratch:
        workdir = keep or Path(scratch)
        with Sandbox(workdir) as sandbox:
            scenario = demo_scenario()
            contacts: list[str] = []
            if rules:
                contacts = _with_rules_data(scenario)
                sandbox.salesforce.add_contacts([{"LastName": "Customer", "Email": email} for email in contacts])
                sandbox.salesforce.add_field({"name": "Signup_Provider__c", "type": "string", "length": 40})
            sandbox.auth0.add_users(scenario.users)
            sandbox.auth0.add_logs(scenario.logs)
            state = workdir / "state.db"
            if state.exists():
                for leftover in workdir.glob("state.db*"):
                    leftover.unlink()
            sections = {"lead": RULES} if rules else {}
            config_path = sandbox.write_config(state_path=state, auth0={"start_from": "oldest"}, **sections)
            config = config_module.load(config_path, environ={**os.environ, **sandbox.env()})
            logs.configure(level="warning", pii=config.logging.pii, secret_values=config.secrets(), stream=sys.stderr)

            print("lead-poller demo: the production code path against the built-in sandbox")
            if rules:
                print(_line("lead rules ([lead] in config.toml)", f"verified email, consent, no {DENIED_DOMAIN}, no {DENIED_APPLICATION} logins, no existing contacts ({len(contacts)})"))
                print(_line("lead fields", "Company <- user_metadata.company, Title <- user_metadata.job_title, LeadSource = Web, Signup_Provider__c <- identities[0].provider"))
            print(_line("Auth0 emulator", f"https://{sandbox.auth0.host}"))
            print(_line("Salesforce emulator", f"https://{sandbox.salesforce.host}"))
            print(_line("seeded", f"{len(scenario.users)} users, {len(scenario.logs)} log events"))
            types = Counter(e.get("type") for e in scenario.logs)
            print(_line("event types", ", ".join(f"{t}: {n}" for t, n in types.most_common())))

            with App(config) as app:
                first = app.run_cycle()
                _print_cycle("Cycle 1", first)
                recheck_reasons = {reason: n for reason, n in app.ledger.reasons("skipped").items() if reason in RECHECK_ON_LOGIN}
                sandbox.auth0.add_logs(_repeat_logins(scenario))
                sandbox.auth0.clear_log()
                sandbox.salesforce.clear_log()
                second = app.run_cycle()
                _print_cycle("Cycle 2 (everyone signs in again: nothing must be duplicated)", second)
                second_calls = _api_calls(sandbox)
                print(_line("API calls in cycle 2", ", ".join(f"{k}: {v}" for k, v in second_calls.items())))
                counts, skipped = app.ledger.counts(), app.ledger.reasons("skipped")
            print("\nThe ledger afterwards (one row per user seen signing in)")
            print(_line("by status", ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))))
            print(_line("skipped, by reason", ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())) or "none"))

            problems = _check(sandbox, scenario, first, second, _eligible_under_rules(scenario, contacts) if rules else None)
            problems += _check_second_cycle(second_calls, recheck_reasons)
            if rules:
                problems += _check_fields(sandbox, scenario)
            print()
            if problems:
                for problem in problems:
                    print(f"  CHECK FAILED: {problem}")
                return ExitCode.ERROR
            leads = len(sandbox.salesforce.leads)
            eligible = "user the rules let in" if rules else "eligible user"
            print(f"OK: {leads} leads in Salesforce, one per {eligible}; every one flagged in Auth0; no duplicates.")
            if keep:
                print(f"Sandbox files kept in {workdir} (config.toml, sandbox-ca.pem, state.db).")
            return ExitCode.OK


def _repeat_logins(scenario: Scenario) -> list[dict]:
    """Everyone who signed in signs in once more, an hour after the scenario's last event, through the
    same application as their last login (so the application rules decide as before)."""
    logins = sorted((e for e in scenario.logs if e["type"] in LOGIN_TYPES and e.get("user_id")), key=lambda e: e["log_id"])
    last_login = {e["user_id"]: e for e in logins}
    when = datetime.strptime(logins[-1]["date"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc) + timedelta(hours=1)
    return [
        log_event("s", user_id=uid, when=when + timedelta(seconds=i), seq=i, user_name=event.get("user_name"),
                  client_id=event.get("client_id"), client_name=event.get("client_name"))
        for i, (uid, event) in enumerate(sorted(last_login.items()))
    ]


def _api_calls(sandbox: Sandbox) -> dict[str, int]:
    """What the last cycle asked of each API, from the emulators' request logs."""
    return {
        "Auth0 log pages": len(sandbox.auth0.calls("GET", r"/api/v2/logs")),
        "Auth0 user searches": len(sandbox.auth0.calls("GET", r"/api/v2/users")),
        "Auth0 profile reads": len(sandbox.auth0.calls("GET", r"/api/v2/users/.+")),
        "Auth0 write-backs": len(sandbox.auth0.calls("PATCH", r"/api/v2/users/.*")),
        "Salesforce": len([r for r in sandbox.salesforce.calls() if "/oauth2/" not in r.path]),
    }


def _check_second_cycle(calls: dict[str, int], recheck_reasons: dict[str, int]) -> list[str]:
    """A user already recorded costs nothing; only users skipped for a reason a new login may change
    (no email yet, no consent yet, not found, ...) have their profile read again, with one search per
    100 of them, and one more for each user not found (a linked identity's primary user)."""
    rechecks = sum(recheck_reasons.values())
    searches = -(-rechecks // 100) + recheck_reasons.get("user_not_found", 0)
    problems = [f"the second cycle made {calls[what]} {what} calls" for what in ("Auth0 write-backs", "Salesforce") if calls[what]]
    if calls["Auth0 profile reads"] > rechecks or calls["Auth0 user searches"] > searches:
        problems.append(f"the second cycle read {calls['Auth0 profile reads']} profiles and searched "
                        f"{calls['Auth0 user searches']} times; only {rechecks} users were due a re-check")
    return problems


def _eligible_under_rules(scenario: Scenario, contacts: list[str]) -> set[str]:
    """Who `RULES` lets become a lead, worked out from the scenario without lead-poller's code."""
    by_id = {u["user_id"]: u for u in scenario.users}
    allowed_login = {e["user_id"] for e in scenario.logs if e["type"] in LOGIN_TYPES and e.get("user_id") and e.get("client_name") != DENIED_APPLICATION}
    eligible = set()
    for user_id in allowed_login:
        user = by_id.get(user_id)
        if user is None or not user.get("email") or (user.get("app_metadata") or {}).get("recordedAsLead") is True:
            continue
        email = user["email"].lower()
        if email.endswith("@" + DENIED_DOMAIN) or user.get("email_verified") is not True:
            continue
        if (user.get("user_metadata") or {}).get("marketing_consent") is not True or email in {c.lower() for c in contacts}:
            continue
        eligible.add(user_id)
    return eligible


def _check_fields(sandbox: Sandbox, scenario: Scenario) -> list[str]:
    by_email = {u["email"].lower(): u for u in scenario.users if u.get("email")}
    problems = []
    for lead in sandbox.salesforce.leads.values():
        user = by_email[lead["Email"].lower()]
        metadata = user.get("user_metadata") or {}
        expected = {
            "Company": metadata.get("company") or COMPANY,
            "Title": metadata.get("job_title"),
            "LeadSource": "Web",
            "Signup_Provider__c": user["identities"][0]["provider"],
        }
        wrong = [name for name, value in expected.items() if lead.get(name) != value]
        if wrong:
            problems.append(f"the lead of {user['user_id']} has unexpected {', '.join(wrong)}")
    return problems


def _check(sandbox: Sandbox, scenario, first: CycleReport, second: CycleReport, eligible: set[str] | None = None) -> list[str]:
    problems = []
    eligible = set(scenario.expected["eligible_user_ids"]) if eligible is None else eligible
    leads = list(sandbox.salesforce.leads.values())
    emails = Counter((lead.get("Email") or "").lower() for lead in leads)
    duplicated = [email for email, n in emails.items() if n > 1]
    if duplicated:
        problems.append(f"{len(duplicated)} emails have more than one lead")
    flagged = {uid for uid, user in sandbox.auth0.users.items() if (user.get("app_metadata") or {}).get("recordedAsLead") is True}
    missing = eligible - flagged
    if missing:
        problems.append(f"{len(missing)} eligible users were not flagged")
    newly_flagged = flagged - set(scenario.expected["flagged_user_ids"])
    if newly_flagged - eligible:
        problems.append(f"{len(newly_flagged - eligible)} users were flagged (made leads) that the rules leave out")
    if first.leads_created + first.leads_reused < 1:
        problems.append("the first cycle created no lead")
    if second.leads_created or second.leads_reused or second.written_back:
        problems.append("the second cycle made or flagged leads again")
    if second.login_events < 1:
        problems.append("the second cycle saw none of the repeat logins")
    if first.exit_code or second.exit_code:
        problems.append(f"exit codes {int(first.exit_code)}, {int(second.exit_code)}")
    return problems
