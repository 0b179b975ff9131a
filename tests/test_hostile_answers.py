"""Answers no vendor documents but real ones send: broken Unicode, bodies of the wrong shape, pages
that never end, gateways' HTML. Each through the sandbox over HTTPS with the real CLI: no crash, no
lost login, no silent 'nothing to do'. (Found by a fault-injection review; the inputs are kept.)"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from poller.errors import ExitCode
from poller.sandbox.scenario import make_log_id, user_profile
from tests.conftest import ledger_rows

FIXTURES = Path(__file__).parent / "fixtures"
REST = r"/services/data/v[\d.]+"


def test_half_a_utf16_pair_in_profiles_and_events_holds_up_nobody(sandbox, tenant, cli):
    fixture = json.loads((FIXTURES / "broken_unicode.json").read_text())
    for user_id, fields in fixture["profiles"].items():
        profile = user_profile(user_id, email=None)
        profile.update(fields)
        sandbox.auth0.add_users([profile])
        tenant.logins(user_id)
    when = datetime(2026, 12, 2, tzinfo=timezone.utc)
    for seq, user_id in enumerate(fixture["event_user_ids"], start=1):  # no such user: recorded all the same
        sandbox.auth0.add_logs([{"log_id": make_log_id(when, seq), "date": when.isoformat(), "type": "s", "user_id": user_id}])
    tenant.user("auth0|after")
    tenant.logins("auth0|after")

    first = cli("--run-once")
    assert first.code == 0, first.stdout[-3000:] + first.stderr
    assert cli("--run-once").code == 0  # and the next run has nothing left over

    outcome = ledger_rows(sandbox)
    for user_id in ("auth0|given", "auth0|family", "auth0|name", "auth0|fine", "auth0|after"):
        assert outcome[user_id] == ("recorded", None), (user_id, outcome[user_id])
    assert outcome["samlp|acme|x\ufffdy"] == ("skipped", "user_not_found")
    leads = {lead["Email"]: lead for lead in sandbox.salesforce.leads.values()}
    assert leads["given@example.com"]["FirstName"] == "x\ufffd" and leads["fine@example.com"]["FirstName"] == "Fine 😀"
    assert all("\ud83d" not in json.dumps(lead, ensure_ascii=False).encode("utf-16", "surrogatepass").decode("utf-16", "replace") for lead in leads.values())
    assert outcome["auth0|email"][0] in ("skipped", "failed")  # an address with U+FFFD in it is not an address


def test_a_maintenance_page_answered_with_200_is_not_an_empty_tenant(sandbox, tenant, cli):
    # start_from = "now" on a tenant whose search answers HTML once: retried, never read as "no logs
    # yet", which would make the next run start from the oldest log and turn a month of logins into leads.
    tenant.user("auth0|old")
    tenant.logins("auth0|old")
    sandbox.auth0.fail("GET", "/api/v2/logs", status=200, body="<html>maintenance</html>", when=lambda r: "from" not in r.query, times=1)
    config = sandbox.write_config(auth0={"start_from": "now"})

    first = cli("--run-once", config=config)
    assert first.code == ExitCode.TEMPORARY, first.stdout + first.stderr
    second = cli("--run-once", config=config)
    assert second.code == 0
    assert sandbox.salesforce.leads == {}  # the login before "now" is not a lead


def test_a_backfill_page_that_is_not_a_list_stops_the_backfill_loudly(sandbox, tenant, cli):
    for i in range(150):
        tenant.user(f"auth0|b{i:03d}")
    sandbox.auth0.fail("GET", "/api/v2/users", status=200, body="<html>oops</html>", when=lambda r: r.query.get("page") == "1", times=-1)
    run = cli("backfill", "--users")
    assert run.code == ExitCode.TEMPORARY  # not 0 with 100 of 150 users queued
    assert "something other than a list" in run.stdout


def test_a_user_not_found_is_looked_at_again_on_the_next_login(sandbox, tenant, cli):
    tenant.logins("google-oauth2|222")  # deleted: 404, no primary user
    assert cli("--run-once").code == 0
    assert ledger_rows(sandbox)["google-oauth2|222"] == ("skipped", "user_not_found")
    tenant.user("google-oauth2|222")  # created again with the same id, and signs in
    tenant.logins("google-oauth2|222")
    assert cli("--run-once").code == 0
    assert ledger_rows(sandbox)["google-oauth2|222"] == ("recorded", None)


def test_salesforce_query_answers_of_the_wrong_shape_are_retried_not_a_crash(sandbox, tenant, cli):
    tenant.user("auth0|q")
    tenant.logins("auth0|q")
    for body in ({"totalSize": 0}, 5):
        sandbox.salesforce.fail("GET", REST + "/query/?", status=200, body=body, times=1)
        run = cli("--run-once")
        assert run.code == ExitCode.TEMPORARY, run.stdout[-2000:] + run.stderr
        assert run.event("cycle_finished")["retrying"] == {"salesforce_unexpected": 1}
        db = sqlite3.connect(sandbox.workdir / "state.db", isolation_level=None)
        db.execute("UPDATE users SET next_attempt_at = 0")
        db.close()
    assert cli("--run-once").code == 0 and len(sandbox.salesforce.leads) == 1


def test_a_query_whose_next_page_never_ends_is_bounded(sandbox, tenant, cli):
    tenant.user("auth0|loop")
    tenant.logins("auth0|loop")
    looping = {"totalSize": 5000, "done": False, "nextRecordsUrl": "/services/data/v59.0/query/01gD0000002HU6KIAW-2000", "records": []}
    sandbox.salesforce.fail("GET", REST + "/query/?.*", status=200, body=looping, times=-1)
    run = cli("--run-once")
    assert run.code == ExitCode.TEMPORARY
    assert len(sandbox.salesforce.calls("GET", REST + "/query/?.*")) == 20  # MAX_QUERY_PAGES, not the org's allowance


def test_an_auth0_body_that_does_not_decode_is_retried(sandbox, tenant, cli):
    tenant.user("auth0|gz")
    tenant.logins("auth0|gz")
    sandbox.auth0.fail("GET", r"/api/v2/users/.+", status=200, body="not gzip at all", headers={"Content-Encoding": "gzip"}, times=3)
    run = cli("--run-once")
    assert run.code == ExitCode.TEMPORARY, run.stdout[-2000:] + run.stderr
    assert run.event("cycle_finished")["retrying"] == {"auth0_unexpected": 1}


def test_a_gateways_html_400_on_a_single_lead_is_the_requests_failure_not_the_users(sandbox, tenant, cli):
    tenant.user("auth0|one")
    tenant.logins("auth0|one")
    sandbox.salesforce.fail("POST", REST + "/sobjects/Lead/?", status=400, body="<html><body>Bad Request</body></html>", times=1)
    run = cli("--run-once")
    assert run.code == ExitCode.TEMPORARY
    assert ledger_rows(sandbox)["auth0|one"] == ("pending", "salesforce_batch_rejected")


def test_a_retention_check_that_fails_does_not_stop_ingest(sandbox, tenant, cli):
    tenant.user("auth0|early")
    tenant.logins("auth0|early")
    assert cli("--run-once").code == 0
    # Ten days later; the checkpoint's log has expired and Auth0's answer about it is a 503.
    later = datetime(2026, 12, 11, tzinfo=timezone.utc)
    sandbox.auth0.add_logs([{"log_id": make_log_id(later, 1), "date": later.isoformat(), "type": "s", "user_id": "auth0|late"}])
    tenant.user("auth0|late")
    sandbox.auth0.fail("GET", r"/api/v2/logs/\d+", status=503, body={"statusCode": 503, "error": "Service Unavailable"}, times=-1)
    run = cli("--run-once")
    assert run.code == 0, run.stdout[-2000:] + run.stderr
    assert "did not say" in run.event("log_retention_gap")["note"]
    assert ledger_rows(sandbox)["auth0|late"] == ("recorded", None)


def test_a_case_insensitive_external_id_field_is_refused_before_any_write(sandbox, tenant, cli):
    # samlp|acme|JDoe and samlp|acme|jdoe are two people; a case-insensitive field is one lead for both.
    sandbox.salesforce.add_field({"name": "Auth0_User_Id__c", "type": "string", "length": 255, "externalId": True, "unique": True, "caseSensitive": False})
    tenant.user("samlp|acme|JDoe", email="john@example.com")
    tenant.user("samlp|acme|jdoe", email="jane@example.com")
    tenant.logins("samlp|acme|JDoe", "samlp|acme|jdoe")
    run = cli("--run-once", config=sandbox.write_config(salesforce={"external_id_field": "Auth0_User_Id__c"}))
    assert run.code == ExitCode.CONFIG and "case sensitive" in run.stderr
    assert sandbox.salesforce.leads == {}


def test_a_log_page_without_a_single_event_is_not_the_end_of_the_stream(sandbox, tenant, cli):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    sandbox.auth0.fail("GET", "/api/v2/logs", status=200, body=[None, "x", 3], when=lambda r: "from" in r.query, times=1)
    run = cli("--run-once")
    assert run.code == ExitCode.TEMPORARY and run.event("cycle_finished")["ingest_error"] == "auth0_unexpected"


def test_backfill_users_on_an_api_without_user_search_is_a_temporary_failure_not_a_bug(sandbox, tenant, cli):
    tenant.user("auth0|a")
    sandbox.auth0.fail("GET", "/api/v2/users", status=404, body={"statusCode": 404, "error": "Not Found", "message": "Not Found"}, times=-1)
    run = cli("backfill", "--users")
    assert run.code == ExitCode.TEMPORARY, run.stdout[-2000:] + run.stderr
    assert "this is a bug" not in run.stderr and "needs user search" in run.stdout + run.stderr
