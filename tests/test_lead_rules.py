"""Who becomes a lead and with what fields, end to end against the sandbox over HTTPS.

Mapping forms and the org's describe, each filter, consent given later, dry runs that write nothing,
and both backfill modes with their cap. Scenarios of several runs go through `App` in this process
(the production wiring, the real SDKs, the same emulators: only the interpreter start is saved);
what the command line itself owns (exit codes, flags, the dry run's output) runs the real CLI.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from structlog.testing import capture_logs

from poller import cli as cli_module
from poller import config as config_module
from poller.app import App
from poller.pipeline import CycleReport
from poller.sandbox.scenario import log_event, user_profile
from tests.conftest import ledger_rows


@pytest.fixture
def tenant(tenant):
    # `start_from = "oldest"` takes the oldest log by date as the checkpoint and reads after its
    # log_id; sandbox event dates trail their log ids by up to 5 s, so a quiet first event, well
    # before the test's own, keeps every test login after the checkpoint.
    tenant.event("slo", "auth0|nobody")
    tenant.seq += 10
    return tenant


@dataclass
class Ran:
    report: CycleReport
    logs: list[dict[str, Any]]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs if e.get("event") == name]


@pytest.fixture
def run(sandbox):
    """One run through `App`: a cycle, or `backfill=(since, until)` / `backfill="users"`."""

    def go(config=None, *, backfill: Any = None, max_leads: int | None = None) -> Ran:
        path = config or sandbox.workdir / "config.toml"
        if not path.exists():
            sandbox.write_config(path)
        loaded = config_module.load(path, environ={**os.environ, **sandbox.env()})
        with capture_logs() as logs, App(loaded) as app:
            if backfill == "users":
                report = app.backfill_users(max_leads=max_leads)
            elif backfill is not None:
                report = app.backfill_logs(*backfill, max_leads=max_leads)
            else:
                report = app.run_cycle()
        return Ran(report, logs)

    return go


def checkpoint_of(sandbox) -> str | None:
    db = sqlite3.connect(sandbox.workdir / "state.db")
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'checkpoint'").fetchone()
        return row[0] if row else None
    finally:
        db.close()


def leads_by_email(sandbox) -> dict[str, dict]:
    found = {}
    for lead in sandbox.salesforce.leads.values():
        assert lead["Email"].lower() not in found, "two leads for one email"
        found[lead["Email"].lower()] = lead
    return found


def describes(sandbox) -> int:
    return len(sandbox.salesforce.calls("GET", r".*/sobjects/Lead/describe/?"))


def writes(sandbox) -> list:
    """Every request that could change something in either vendor (token requests excepted)."""
    found = [c for c in sandbox.salesforce.requests if c.method != "GET" and not c.path.endswith("/oauth2/token")]
    return found + [c for c in sandbox.auth0.requests if c.method != "GET" and c.path != "/oauth/token"]


def dry_run_lines(run) -> list[dict]:
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def log_events(run, name: str) -> list[dict]:
    """Log lines from stderr (a dry run logs there, out of the way of its decisions)."""
    found = []
    for line in run.stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


# --- mapping ------------------------------------------------------------------------------------


def test_every_mapping_form_reaches_salesforce(sandbox, tenant, run):
    sandbox.salesforce.add_field({"name": "Plan__c", "type": "string", "length": 6})
    sandbox.salesforce.add_field({"name": "Provider__c", "type": "string", "length": 40})
    sandbox.salesforce.add_field({"name": "Newsletter__c", "type": "boolean"})
    sandbox.salesforce.add_field({"name": "Seats__c", "type": "double"})
    tenant.user(
        "auth0|full",
        given_name="Ada",
        family_name="Lovelace",
        user_metadata={"company": "Analytical Engines", "job_title": "Countess", "newsletter": True, "seats": 12},
        app_metadata={"plan": "enterprise"},
    )
    tenant.user("google-oauth2|1234", email="grace@example.com", name="Grace Hopper")
    tenant.logins("auth0|full", "google-oauth2|1234")
    config = sandbox.write_config(
        lead={
            "fields": {
                "Title": "user_metadata.job_title",
                "LastName": ["family_name", "name", "email_local_part"],
                "Company": {"from": "user_metadata.company"},
                "Plan__c": {"from": ["app_metadata.tier", "app_metadata.plan"], "default": "free"},
                "Provider__c": "identities[0].provider",
                "Newsletter__c": "user_metadata.newsletter",
                "Seats__c": "user_metadata.seats",
                "LeadSource": {"value": "Web"},
                "FirstName": False,
            }
        }
    )

    run(config)

    leads = leads_by_email(sandbox)
    full, bare = leads["full@example.com"], leads["grace@example.com"]
    assert (full["LastName"], full["Title"], full["Company"], full["LeadSource"]) == ("Lovelace", "Countess", "Analytical Engines", "Web")
    assert (full["Plan__c"], full["Provider__c"], full["Newsletter__c"], full["Seats__c"]) == ("enterp", "auth0", True, 12)
    assert full.get("FirstName") is None  # left out
    # Missing values fall back: the configured company, the chain's default, the next source.
    assert (bare["LastName"], bare["Company"], bare["Plan__c"], bare["Provider__c"]) == ("Grace Hopper", "Example Web Signups", "free", "google-oauth2")
    assert bare.get("Title") is None and bare.get("Newsletter__c") is None


def test_a_mapping_the_org_cannot_take_stops_before_anything_is_read(sandbox, tenant, cli):
    sandbox.salesforce.add_field({"name": "Score__c", "type": "double", "createable": False})
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    config = sandbox.write_config(lead={"fields": {"Plan_c": "app_metadata.plan", "Score__c": "user_metadata.score"}})

    result = cli("--run-once", config=config)

    assert result.code == 78, result.stderr
    assert "2 problems" in result.stderr
    assert "lead.fields.Plan_c: the org's Lead object has no field Plan_c" in result.stderr
    assert "lead.fields.Score__c: Lead.Score__c cannot be written on create" in result.stderr
    assert sandbox.auth0.requests == []  # not a log page, not a profile
    assert sandbox.salesforce.leads == {}
    assert checkpoint_of(sandbox) is None


def test_the_describe_is_cached_for_a_day_and_read_again_when_the_org_may_have_changed(sandbox, tenant, run):
    tenant.user("auth0|a", app_metadata={"plan": "pro"})
    tenant.logins("auth0|a")
    run()
    run()
    assert describes(sandbox) == 1  # the second run used the cached describe

    # A new custom field, and a mapping for it: the cached describe does not know it, so it is
    # read again before the mapping is called wrong.
    sandbox.salesforce.add_field({"name": "Plan__c", "type": "string", "length": 40})
    tenant.user("auth0|b", app_metadata={"plan": "team"})
    tenant.logins("auth0|b")
    config = sandbox.write_config(lead={"fields": {"Plan__c": "app_metadata.plan"}})
    run(config)
    assert describes(sandbox) == 2
    assert leads_by_email(sandbox)["b@example.com"]["Plan__c"] == "team"

    db = sqlite3.connect(sandbox.workdir / "state.db")
    db.execute("UPDATE salesforce_describe SET fetched_at = ?", (time.time() - 25 * 3600,))
    db.commit()
    db.close()
    run(config)
    assert describes(sandbox) == 3  # a day old: refreshed


def test_no_lead_is_written_before_the_describe_is_read_and_a_stale_one_serves_when_a_refresh_fails(sandbox, tenant, run):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    outage = sandbox.salesforce.fail("GET", r".*/sobjects/Lead/describe/?", status=503, body=[{"errorCode": "SERVER_UNAVAILABLE", "message": "down"}], times=-1)

    ran = run()

    assert ran.report.exit_code == 75 and ran.report.retrying == {"salesforce_unavailable": 1}
    assert ledger_rows(sandbox)["auth0|a"] == ("pending", "salesforce_unavailable")
    assert sandbox.salesforce.leads == {} and checkpoint_of(sandbox) is not None  # logs were still read

    outage.times = 0
    db = sqlite3.connect(sandbox.workdir / "state.db")
    db.execute("UPDATE users SET next_attempt_at = 0")
    db.commit()
    db.close()
    run()
    assert set(leads_by_email(sandbox)) == {"a@example.com"}

    # A day later the refresh fails: the cached describe still serves, with a warning.
    db = sqlite3.connect(sandbox.workdir / "state.db")
    db.execute("UPDATE salesforce_describe SET fetched_at = ?", (time.time() - 25 * 3600,))
    db.commit()
    db.close()
    sandbox.salesforce.fail("GET", r".*/sobjects/Lead/describe/?", status=503, body=[{"errorCode": "SERVER_UNAVAILABLE", "message": "down"}], times=-1)
    tenant.user("auth0|b")
    tenant.logins("auth0|b")
    ran = run()
    assert ran.report.exit_code == 0 and ran.events("salesforce_describe_stale")
    assert set(leads_by_email(sandbox)) == {"a@example.com", "b@example.com"}


def test_values_are_cut_to_the_org_length_of_a_custom_field(sandbox, tenant, run):
    sandbox.salesforce.add_field({"name": "Team__c", "type": "string", "length": 5})
    tenant.user("auth0|a", user_metadata={"team": "Zoë 🚀 Rocketeers"})
    tenant.logins("auth0|a")
    config = sandbox.write_config(lead={"fields": {"Team__c": "user_metadata.team"}})

    run(config)

    # The rocket is 2 UTF-16 units: it does not fit in the 5th, and is never cut in half.
    assert leads_by_email(sandbox)["a@example.com"]["Team__c"] == "Zoë"


# --- filters --------------------------------------------------------------------------------------


def test_application_filters_apply_to_login_events(sandbox, tenant, run):
    for name in ("web", "ios", "both", "admin"):
        tenant.user(f"auth0|{name}")
    tenant.event("s", "auth0|web", client_id="WEB123", client_name="Acme Web")
    tenant.event("s", "auth0|ios", client_id="IOS456", client_name="Acme iOS")
    tenant.event("s", "auth0|both", client_id="IOS456", client_name="Acme iOS")
    tenant.event("s", "auth0|both", client_id="WEB123", client_name="Acme Web")
    tenant.event("s", "auth0|admin", client_id="ADM789", client_name="Acme Admin")
    # Allowed by name (any case), denied by client_id.
    config = sandbox.write_config(lead={"allow_applications": ["acme web"], "deny_applications": ["IOS456"]})

    ran = run(config)

    assert set(leads_by_email(sandbox)) == {"web@example.com", "both@example.com"}
    rows = ledger_rows(sandbox)
    assert rows["auth0|ios"] == ("skipped", "application_denied")
    assert rows["auth0|admin"] == ("skipped", "application_not_allowed")
    assert {(e["user_id"], e["reason"]) for e in ran.events("user_filtered")} == {
        ("auth0|ios", "application_denied"),
        ("auth0|admin", "application_not_allowed"),
    }
    assert ran.report.summary()["logins_filtered"] == {"application_denied": 2, "application_not_allowed": 1}
    assert sandbox.auth0.calls("GET", r"/api/v2/users/auth0\|(ios|admin)") == []  # not even a profile read

    # The same user signs in through an allowed application later: now a lead.
    tenant.event("s", "auth0|ios", client_id="WEB123", client_name="Acme Web")
    run(config)
    assert "ios@example.com" in leads_by_email(sandbox)


def test_connection_filters_judge_the_event_and_the_profile(sandbox, tenant, run):
    tenant.user("auth0|tester")
    tenant.user("auth0|sso-tester", identities=[{"connection": "Test-Users", "provider": "auth0", "user_id": "sso-tester", "isSocial": False}])
    tenant.user("google-oauth2|99", email="real@example.com")
    tenant.event("s", "auth0|tester", connection="Test-Users")
    tenant.event("s", "auth0|sso-tester", shape="sso")  # an SSO login names no connection
    tenant.logins("google-oauth2|99")

    run(sandbox.write_config(lead={"deny_connections": ["test-users"]}))

    assert set(leads_by_email(sandbox)) == {"real@example.com"}
    rows = ledger_rows(sandbox)
    assert rows["auth0|tester"] == ("skipped", "connection_denied")  # at ingest, from the event
    assert rows["auth0|sso-tester"] == ("skipped", "connection_denied")  # at work, from the identities


def test_connection_allow_list_through_the_sandbox(sandbox, tenant, run):
    tenant.user("auth0|db")
    tenant.user("google-oauth2|77", email="social@example.com")
    tenant.user("auth0|sso", identities=[{"connection": "acme-saml", "provider": "samlp", "user_id": "sso", "isSocial": False}])
    tenant.event("s", "auth0|db", connection="Username-Password-Authentication")
    tenant.event("s", "google-oauth2|77", connection="google-oauth2")
    tenant.event("s", "auth0|sso", shape="sso")  # no connection on the event: the profile's identities decide

    run(sandbox.write_config(lead={"allow_connections": ["google-oauth2", "ACME-SAML"]}))

    assert set(leads_by_email(sandbox)) == {"social@example.com", "sso@example.com"}
    assert ledger_rows(sandbox)["auth0|db"] == ("skipped", "connection_not_allowed")


def test_email_domain_filters(sandbox, tenant, run):
    tenant.user("auth0|staff", email="ops@eu.staff.example.net")
    tenant.user("auth0|org", email="someone@example.org")
    tenant.user("auth0|ok", email="customer@example.com")
    tenant.logins("auth0|staff", "auth0|org", "auth0|ok")
    config = sandbox.write_config(lead={"allow_email_domains": ["example.com", "example.net"], "deny_email_domains": ["staff.example.net"]})

    ran = run(config)

    assert set(leads_by_email(sandbox)) == {"customer@example.com"}
    assert ledger_rows(sandbox)["auth0|staff"] == ("skipped", "email_domain_denied")
    assert ledger_rows(sandbox)["auth0|org"] == ("skipped", "email_domain_not_allowed")
    assert ran.report.summary()["skipped"] == {"email_domain_denied": 1, "email_domain_not_allowed": 1}


def test_unverified_users_wait_and_become_leads_after_verifying_and_signing_in_again(sandbox, tenant, run):
    tenant.user("auth0|new", email_verified=False)
    tenant.user("auth0|blocked", email_verified=True, blocked=True)
    tenant.logins("auth0|new", "auth0|blocked")
    config = sandbox.write_config(lead={"require_verified_email": True})

    ran = run(config)

    assert sandbox.salesforce.leads == {}
    assert ledger_rows(sandbox) == {"auth0|new": ("skipped", "email_unverified"), "auth0|blocked": ("skipped", "blocked")}
    assert {e["user_id"]: e["reason"] for e in ran.events("user_skipped")} == {"auth0|new": "email_unverified", "auth0|blocked": "blocked"}

    sandbox.auth0.users["auth0|new"]["email_verified"] = True
    run(config)
    assert sandbox.salesforce.leads == {}  # verified, but not seen again yet
    tenant.logins("auth0|new")
    run(config)
    assert set(leads_by_email(sandbox)) == {"new@example.com"}


def test_consent_given_later_still_makes_a_lead(sandbox, tenant, run):
    tenant.user("auth0|later", user_metadata={"marketing_consent": False})
    tenant.user("auth0|yes", user_metadata={"marketing_consent": True})
    tenant.user("auth0|text", user_metadata={"marketing_consent": "true"})
    tenant.logins("auth0|later", "auth0|yes", "auth0|text")
    config = sandbox.write_config(lead={"consent": "user_metadata.marketing_consent"})

    run(config)

    assert set(leads_by_email(sandbox)) == {"yes@example.com"}
    assert ledger_rows(sandbox)["auth0|later"] == ("skipped", "awaiting_consent")
    assert ledger_rows(sandbox)["auth0|text"] == ("skipped", "awaiting_consent")  # exactly true, not "true"
    assert [c for c in sandbox.auth0.calls("PATCH", r"/api/v2/users/.*") if "later" in c.path] == []

    sandbox.auth0.users["auth0|later"]["user_metadata"]["marketing_consent"] = True
    tenant.logins("auth0|later")
    run(config)
    assert set(leads_by_email(sandbox)) == {"yes@example.com", "later@example.com"}
    assert ledger_rows(sandbox)["auth0|later"][0] == "recorded"


def test_existing_contacts_are_not_made_leads_at_one_query_per_batch(sandbox, tenant, run):
    sandbox.salesforce.add_contacts([{"LastName": "Known", "Email": "Customer@Example.com"}])
    tenant.user("auth0|customer", email="customer@example.com")
    tenant.user("auth0|prospect", email="prospect@example.com")
    tenant.logins("auth0|customer", "auth0|prospect")

    run(sandbox.write_config(lead={"skip_existing_contacts": True}))

    assert set(leads_by_email(sandbox)) == {"prospect@example.com"}
    assert ledger_rows(sandbox)["auth0|customer"] == ("skipped", "existing_contact")
    contact_queries = [c for c in sandbox.salesforce.calls("GET", r".*/query/?") if "FROM Contact" in c.query.get("q", "")]
    assert len(contact_queries) == 1


def test_a_run_as_user_that_cannot_read_contacts_is_told_so(sandbox, tenant, cli):
    sandbox.salesforce.fail(
        "GET",
        r".*/query/?",
        status=400,
        body=[{"message": "sObject type 'Contact' is not supported.", "errorCode": "INVALID_TYPE"}],
        when=lambda request: "FROM Contact" in request.query.get("q", ""),
    )
    tenant.user("auth0|a")
    tenant.logins("auth0|a")

    result = cli("--run-once", config=sandbox.write_config(lead={"skip_existing_contacts": True}))

    assert result.code == 77
    assert "skip_existing_contacts needs read access to Contact" in result.stderr
    assert sandbox.salesforce.leads == {}


# --- dry run --------------------------------------------------------------------------------------


def test_a_dry_run_prints_every_decision_and_payload_and_writes_nothing(sandbox, tenant, run, cli):
    tenant.user("auth0|before", user_metadata={"ok": True})
    tenant.logins("auth0|before")
    config = sandbox.write_config(lead={"consent": "user_metadata.ok", "fields": {"Title": {"value": "Prospect"}}})
    run(config)  # a real run first: the state exists
    tenant.user("auth0|new", given_name="Nia", family_name="Okafor", user_metadata={"ok": True})
    tenant.user("auth0|waiting")
    tenant.user("auth0|flagged", app_metadata={"recordedAsLead": True}, user_metadata={"ok": True})
    tenant.user("auth0|known", email="known@example.com", user_metadata={"ok": True})
    (known_lead,) = sandbox.salesforce.add_leads([{"LastName": "Known", "Company": "X", "Email": "known@example.com"}])
    tenant.logins("auth0|new", "auth0|waiting", "auth0|flagged", "auth0|known")
    state = sandbox.workdir / "state.db"
    before = state.read_bytes()
    files = sorted(p.name for p in sandbox.workdir.iterdir())
    leads_before = dict(sandbox.salesforce.leads)
    sandbox.auth0.clear_log()
    sandbox.salesforce.clear_log()

    result = cli("--run-once", "--dry-run", config=config)

    assert result.code == 0, result.stderr
    lines = {line["user_id"]: line for line in dry_run_lines(result) if "user_id" in line}
    assert lines["auth0|new"] == {
        "dry_run": "create_lead",
        "user_id": "auth0|new",
        "lead": {"LastName": "Okafor", "FirstName": "Nia", "Email": "new@example.com", "Company": "Example Web Signups", "LeadSource": "Auth0", "Title": "Prospect"},
        "write_back": {"app_metadata": {"recordedAsLead": True, "salesforceLeadId": "(new lead 1)"}},
    }
    assert (lines["auth0|waiting"]["dry_run"], lines["auth0|waiting"]["reason"]) == ("skip", "awaiting_consent")
    assert lines["auth0|flagged"]["dry_run"] == "already_flagged"
    assert (lines["auth0|known"]["dry_run"], lines["auth0|known"]["lead_id"]) == ("reuse_lead", known_lead)
    assert dry_run_lines(result)[-1] == {"dry_run": "summary", "decisions": {"already_flagged": 1, "create_lead": 1, "reuse_lead": 1, "skip": 1}, "written": "nothing"}
    # Reads were real; nothing was written anywhere.
    assert sandbox.auth0.calls("GET", r"/api/v2/users/.*") and sandbox.salesforce.calls("GET", r".*/query/?")
    assert writes(sandbox) == []
    assert sandbox.salesforce.leads == leads_before
    assert state.read_bytes() == before
    assert sorted(p.name for p in sandbox.workdir.iterdir()) == files
    assert log_events(result, "cycle_finished")[0]["dry_run"] is True

    # The real run afterwards does what the dry run said.
    run(config)
    assert leads_by_email(sandbox)["new@example.com"]["Title"] == "Prospect"
    assert ledger_rows(sandbox)["auth0|waiting"] == ("skipped", "awaiting_consent")


def test_a_dry_run_on_a_new_state_creates_no_file(sandbox, tenant, cli):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    config = sandbox.write_config(state_path=sandbox.workdir / "state" / "new.db")

    result = cli("--run-once", "--dry-run", config=config)

    assert result.code == 0, result.stderr
    assert [line["dry_run"] for line in dry_run_lines(result)] == ["create_lead", "summary"]
    assert not (sandbox.workdir / "state").exists()
    assert writes(sandbox) == []


# --- backfill -------------------------------------------------------------------------------------


def _old_logins(sandbox, users: list[str], start: datetime, per_user: int = 1, seq0: int = 1_000_000) -> None:
    events = []
    seq = seq0
    for n in range(per_user):
        for i, user_id in enumerate(users):
            seq += 1
            events.append(log_event("s", user_id=user_id, when=start + timedelta(seconds=n * len(users) + i), seq=seq))
    sandbox.auth0.add_logs(events)


def _live_state(sandbox, tenant, run):
    """A state that started "now" (so the older logins were never read) with its checkpoint set."""
    tenant.user("auth0|live")
    tenant.logins("auth0|live")
    config = sandbox.write_config(auth0={"start_from": "now"})
    run(config)
    return config, checkpoint_of(sandbox)


def test_backfill_replays_retained_logs_past_the_search_limit_without_moving_the_checkpoint(sandbox, tenant, run, cli):
    old_users = [f"auth0|old{i}" for i in range(6)]
    for user_id in old_users + ["auth0|outside"]:
        tenant.user(user_id)
    start = datetime(2026, 11, 20, tzinfo=timezone.utc)
    _old_logins(sandbox, old_users, start, per_user=180)  # 1,080 logins: more than one search can give
    _old_logins(sandbox, ["auth0|outside"], start - timedelta(days=3), seq0=10)
    config, checkpoint = _live_state(sandbox, tenant, run)
    sandbox.auth0.clear_log()

    result = cli("backfill", "--since", "2026-11-19T00:00:00Z", "--until", "2026-11-21T00:00:00Z", config=config)

    assert result.code == 0, result.stderr
    assert set(leads_by_email(sandbox)) == {f"old{i}@example.com" for i in range(6)}
    assert checkpoint_of(sandbox) == checkpoint
    searches = sandbox.auth0.calls("GET", "/api/v2/logs")
    assert all("from" not in c.query and int(c.query["page"]) <= 9 for c in searches)
    windows = sorted({c.query["q"] for c in searches})
    assert len(windows) == 2 and windows[0] == "date:[2026-11-19T00:00:00.000Z TO 2026-11-21T00:00:00.000Z}"
    summary = result.event("backfill_finished")
    assert (summary["login_events"], summary["new_users"], summary["leads_created"]) == (1080, 6, 6)


def test_backfill_since_dry_run_prints_the_old_logins_and_changes_nothing(sandbox, tenant, run, cli):
    tenant.user("auth0|old0")
    _old_logins(sandbox, ["auth0|old0"], datetime(2026, 11, 20, tzinfo=timezone.utc))
    config, checkpoint = _live_state(sandbox, tenant, run)
    state = (sandbox.workdir / "state.db").read_bytes()
    sandbox.auth0.clear_log()
    sandbox.salesforce.clear_log()

    result = cli("backfill", "--since", "2026-11-19T00:00:00Z", "--dry-run", config=config)

    assert result.code == 0, result.stderr
    assert ("create_lead", "auth0|old0") in [(line["dry_run"], line.get("user_id")) for line in dry_run_lines(result)]
    assert writes(sandbox) == [] and "old0@example.com" not in leads_by_email(sandbox)
    assert (sandbox.workdir / "state.db").read_bytes() == state and checkpoint_of(sandbox) == checkpoint


def test_backfill_max_leads_caps_one_run_and_the_rest_wait(sandbox, tenant, run):
    users = [f"auth0|u{i}" for i in range(5)]
    for user_id in users:
        tenant.user(user_id)
    _old_logins(sandbox, users, datetime(2026, 11, 20, tzinfo=timezone.utc))
    config, _ = _live_state(sandbox, tenant, run)
    sandbox.auth0.clear_log()

    ran = run(config, backfill=(datetime(2026, 11, 19, tzinfo=timezone.utc), datetime(2026, 11, 21, tzinfo=timezone.utc)), max_leads=2)

    assert len(sandbox.salesforce.leads) == 2 and ran.report.lead_cap_reached
    assert sorted(status for uid, (status, _) in ledger_rows(sandbox).items() if uid in users) == ["pending"] * 3 + ["recorded"] * 2
    assert len(sandbox.auth0.calls("GET", r"/api/v2/users/.*")) == 2  # no profile read past the cap

    run(config)  # the daemon's next cycle works the rest
    assert len(sandbox.salesforce.leads) == 5


def test_backfill_users_enqueues_every_unflagged_user_past_the_search_limit(sandbox, run):
    profiles = [user_profile(f"auth0|{i:05d}", email=f"user{i}@example.com") for i in range(1_030)]
    profiles += [user_profile(f"auth0|flagged{i}", email=f"f{i}@example.com", app_metadata={"recordedAsLead": True}) for i in range(5)]
    profiles.append(user_profile("auth0|false", email="false@example.com", app_metadata={"recordedAsLead": False}))
    sandbox.auth0.add_users(profiles)

    ran = run(backfill="users", max_leads=3)

    summary = ran.report.summary()
    assert (summary["new_users"], summary["leads_created"], summary["lead_cap_reached"]) == (1_031, 3, True)
    rows = ledger_rows(sandbox)
    assert len(rows) == 1_031 and not any(uid.startswith("auth0|flagged") for uid in rows)
    searches = sandbox.auth0.calls("GET", "/api/v2/users")
    assert all(int(c.query["page"]) <= 9 and c.query["search_engine"] == "v3" for c in searches)
    assert any("created_at:[" in c.query["q"] for c in searches)  # a second slice
    assert checkpoint_of(sandbox) is None  # the live stream was not touched


def test_backfill_users_dry_run_writes_nothing(sandbox, tenant, cli):
    tenant.user("auth0|a", given_name="Ada")
    tenant.user("auth0|b", app_metadata={"recordedAsLead": True})

    result = cli("backfill", "--users", "--dry-run")

    assert result.code == 0, result.stderr
    assert [(line["dry_run"], line.get("user_id")) for line in dry_run_lines(result)] == [("create_lead", "auth0|a"), ("summary", None)]
    assert writes(sandbox) == []
    assert not (sandbox.workdir / "state.db").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (("backfill",), "give either --since TIME"),
        (("backfill", "--since", "2026-11-01T00:00:00Z", "--users"), "give either --since TIME"),
        (("backfill", "--since", "last week"), "not an RFC 3339 time"),
        (("backfill", "--since", "2026-11-01T00:00:00"), "give a time zone"),
        (("backfill", "--since", "2026-11-02T00:00:00Z", "--until", "2026-11-01T00:00:00Z"), "is not before --until"),
        (("backfill", "--users", "--max-leads", "0"), "--max-leads '0'"),
        (("backfill", "--users", "--until", "2026-11-01T00:00:00Z"), "--until goes with --since"),
        (("--dry-run",), "--dry-run goes with --run-once or backfill"),
        (("--dry-run", "retry", "--all-failed"), "--dry-run goes with --run-once or backfill"),
    ],
)
def test_arguments_that_cannot_work_are_one_line_and_exit_78(sandbox, capsys, args, message):
    code = cli_module.main(["--config", str(sandbox.write_config()), *args])
    stderr = capsys.readouterr().err
    assert code == 78
    assert message in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert sandbox.auth0.requests == [] and sandbox.salesforce.requests == []


def test_backfill_users_refuses_when_application_filters_are_set(sandbox, cli):
    result = cli("backfill", "--users", config=sandbox.write_config(lead={"allow_applications": ["Acme Web"]}))
    assert result.code == 78
    assert "backfill --users cannot tell which application" in result.stderr
    assert sandbox.auth0.requests == []


def test_the_rules_demo_checks_every_lead_against_the_rules(capsys):
    from poller.sandbox.demo import run_demo

    assert run_demo(rules=True) == 0
    out = capsys.readouterr().out
    assert "OK: 14 leads in Salesforce, one per user the rules let in" in out
    for reason in ("application_denied", "awaiting_consent", "email_domain_denied", "email_unverified", "existing_contact"):
        assert reason in out


def test_the_readme_documents_every_lead_key():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    for key in ("fields.<Field>", "consent", "require_verified_email", "skip_existing_contacts", *config_module.LIST_KEYS):
        assert f"| `lead.{key}` |" in readme, key
    assert "## Deciding who becomes a lead" in readme
