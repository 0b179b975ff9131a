"""The main job end to end: the real CLI in a subprocess, against the sandbox over HTTPS with a CA bundle."""

from __future__ import annotations

import sqlite3

from poller.errors import ExitCode


def leads_by_email(sandbox) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for lead in sandbox.salesforce.leads.values():
        found.setdefault(lead["Email"].lower(), []).append(lead)
    return found


def test_only_login_types_create_leads(sandbox, tenant, cli):
    for name in ("login", "crossorigin", "native", "password", "refresh", "silent", "codeexchange", "failed", "signup"):
        tenant.user(f"auth0|{name}")
    tenant.event("s", "auth0|login")
    tenant.event("scoa", "auth0|crossorigin")
    tenant.event("sens", "auth0|native")
    tenant.event("sepft", "auth0|password")
    tenant.event("sertft", "auth0|refresh")
    tenant.event("ssa", "auth0|silent")
    tenant.event("seacft", "auth0|codeexchange")
    tenant.event("f", "auth0|failed")
    tenant.event("ss", "auth0|signup")  # not in the default login_types
    tenant.event("seccft", None)  # machine to machine: user_id ""

    run = cli("--run-once")

    assert run.code == 0, run.stderr
    assert set(leads_by_email(sandbox)) == {f"{n}@example.com" for n in ("login", "crossorigin", "native", "password")}
    summary = run.event("cycle_finished")
    assert summary["events_read"] == 10 and summary["login_events"] == 4 and summary["leads_created"] == 4


def test_one_lead_per_user_however_many_logins(sandbox, tenant, cli):
    tenant.user("auth0|busy")
    for _ in range(250):  # three pages of logs
        tenant.event("s", "auth0|busy")

    run = cli("--run-once")

    assert run.code == 0, run.stderr
    assert len(sandbox.salesforce.leads) == 1
    assert len(sandbox.auth0.calls("GET", r"/api/v2/users/.*")) == 1
    assert len(sandbox.auth0.calls("PATCH", r"/api/v2/users/.*")) == 1
    log_pages = sandbox.auth0.calls("GET", "/api/v2/logs")
    assert [c.query.get("take") for c in log_pages if "from" in c.query] == ["100"] * 4  # 100, 100, 50, empty


def test_flag_and_lead_id_are_written_and_other_app_metadata_survives(sandbox, tenant, cli):
    tenant.user("auth0|keeper", given_name="Kim", family_name="Keeper", app_metadata={"plan": "pro", "roles": ["admin"], "recordedAsLead": False})
    tenant.logins("auth0|keeper")

    assert cli("--run-once").code == 0

    (lead,) = sandbox.salesforce.leads.values()
    assert (lead["FirstName"], lead["LastName"], lead["Company"], lead["LeadSource"]) == ("Kim", "Keeper", "Example Web Signups", "Auth0")
    app_metadata = sandbox.auth0.users["auth0|keeper"]["app_metadata"]
    assert app_metadata == {"plan": "pro", "roles": ["admin"], "recordedAsLead": True, "salesforceLeadId": lead["Id"]}
    (patch,) = sandbox.auth0.calls("PATCH", r"/api/v2/users/.*")
    assert patch.json() == {"app_metadata": {"recordedAsLead": True, "salesforceLeadId": lead["Id"]}}
    assert "auth0%7Ckeeper" in patch.path or patch.path.endswith("auth0|keeper")


def test_second_run_creates_nothing_and_reads_no_recorded_profile(sandbox, tenant, cli):
    tenant.user("auth0|a")
    tenant.user("auth0|b")
    tenant.logins("auth0|a", "auth0|b")
    assert cli("--run-once").code == 0
    sandbox.auth0.clear_log()
    sandbox.salesforce.clear_log()
    tenant.logins("auth0|a", "auth0|b", "auth0|a")  # they sign in again

    run = cli("--run-once")

    assert run.code == 0
    assert len(sandbox.salesforce.leads) == 2
    assert sandbox.auth0.calls("GET", r"/api/v2/users/.*") == []
    assert sandbox.auth0.calls("PATCH", r"/api/v2/users/.*") == []
    assert [c.path for c in sandbox.salesforce.requests] == []  # not even a token
    assert run.event("cycle_finished")["login_events"] == 3


def test_checkpoint_survives_a_restart_and_is_the_last_log_id_of_the_page(sandbox, tenant, cli):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    last = tenant.event("slo", "auth0|a")
    assert cli("--run-once").code == 0
    db = sqlite3.connect(sandbox.workdir / "state.db")
    (checkpoint,) = db.execute("SELECT value FROM meta WHERE key = 'checkpoint'").fetchone()
    db.close()
    assert checkpoint == last["log_id"]
    sandbox.auth0.clear_log()

    assert cli("--run-once").code == 0

    first_read = sandbox.auth0.calls("GET", "/api/v2/logs")[0]
    assert first_read.query == {"from": last["log_id"], "take": "100"}  # exactly from and take


def test_start_from_now_ignores_earlier_logins(sandbox, tenant, cli):
    tenant.user("auth0|before")
    tenant.user("auth0|after")
    tenant.logins("auth0|before")
    config = sandbox.write_config(auth0={"start_from": "now"})
    assert cli("--run-once", config=config).code == 0
    assert sandbox.salesforce.leads == {}
    tenant.logins("auth0|after")

    assert cli("--run-once", config=config).code == 0

    assert set(leads_by_email(sandbox)) == {"after@example.com"}


def test_start_from_a_log_id_reads_only_the_logs_after_it(sandbox, tenant, cli):
    for name in ("before", "at", "after"):
        tenant.user(f"auth0|{name}")
        tenant.logins(f"auth0|{name}")
    at = next(e["log_id"] for e in sandbox.auth0.logs if e.get("user_id") == "auth0|at")
    config = sandbox.write_config(auth0={"start_from": at})

    run = cli("--run-once", config=config)

    assert run.code == 0, run.stdout + run.stderr
    assert set(leads_by_email(sandbox)) == {"after@example.com"}  # `from` is exclusive: the id itself is the checkpoint
    assert run.event("cycle_finished")["login_events"] == 1
    assert sandbox.auth0.calls("GET", "/api/v2/logs")[0].query["from"] == at  # no search: the id is used as it is


def test_users_without_email_are_skipped_with_their_reason(sandbox, tenant, cli):
    tenant.user("sms|+15555550100", email=None)
    tenant.logins("sms|+15555550100")

    run = cli("--run-once")

    assert run.code == 0
    assert sandbox.salesforce.leads == {}
    skipped = run.event("user_skipped")
    assert (skipped["user_id"], skipped["reason"]) == ("sms|+15555550100", "no_email")
    assert run.event("cycle_finished")["skipped"] == {"no_email": 1}
    assert sandbox.auth0.calls("PATCH", r"/api/v2/users/.*") == []


def test_invalid_config_exits_78_lists_every_problem_and_sends_nothing(sandbox, cli, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(
        sandbox.config_text(
            auth0={"domain": "https://" + sandbox.auth0.host, "start_from": "last tuesday"},
            salesforce={"domain": "login.salesforce.com"},
            schedule={"interval_seconds": -5},
        )
    )

    run = cli("--run-once", config=config)

    assert run.code == ExitCode.CONFIG == 78
    for key in ("auth0.domain", "auth0.start_from", "salesforce.domain", "schedule.interval_seconds"):
        assert key in run.stderr
    assert "4 problems" in run.stderr
    assert sandbox.auth0.requests == [] and sandbox.salesforce.requests == []


def test_missing_secret_names_the_environment_variable(sandbox, tmp_path):
    from tests.conftest import run_cli

    config = sandbox.write_config()
    run = run_cli("--config", config, "--run-once", env={"AUTH0_CLIENT_SECRET": "x" * 12})
    assert run.code == 78
    assert "SALESFORCE_CLIENT_SECRET" in run.stderr


def test_existing_open_lead_with_the_same_email_is_reused(sandbox, tenant, cli):
    tenant.user("auth0|known", email="Known.Person@example.com")
    (existing,) = sandbox.salesforce.add_leads([{"LastName": "Person", "Company": "Other", "Email": "known.person@example.com"}])
    tenant.logins("auth0|known")

    run = cli("--run-once")

    assert run.code == 0
    assert list(sandbox.salesforce.leads) == [existing]
    assert sandbox.auth0.users["auth0|known"]["app_metadata"]["salesforceLeadId"] == existing
    assert run.event("cycle_finished")["leads_reused"] == 1


def test_already_flagged_users_cost_no_salesforce_call(sandbox, tenant, cli):
    tenant.user("auth0|old", app_metadata={"recordedAsLead": True})
    tenant.logins("auth0|old")

    run = cli("--run-once")

    assert run.code == 0
    # Only the start-up check of the mapping against the Lead describe (cached for a day).
    assert [(c.method, c.path.rsplit("/", 2)[-2:]) for c in sandbox.salesforce.requests] == [
        ("POST", ["oauth2", "token"]),
        ("GET", ["Lead", "describe"]),
    ]
    assert sandbox.auth0.calls("PATCH", r"/api/v2/users/.*") == []
    assert run.event("cycle_finished")["already_flagged"] == 1


def test_demo_command_runs_and_checks_itself(tmp_path):
    from tests.conftest import run_cli

    run = run_cli("demo", timeout=120)
    assert run.code == 0, run.stdout + run.stderr
    assert "OK:" in run.stdout and "leads created" in run.stdout
    # The second cycle sees everyone sign in again, and costs no write and no Salesforce call.
    second = run.stdout.split("Cycle 2", 1)[1]
    assert "Auth0 write-backs: 0, Salesforce: 0" in second and "leads created                      0" in second


def test_retry_makes_failed_users_pending_and_the_next_run_works_them(sandbox, tenant, cli):
    tenant.user("auth0|picky")
    tenant.user("auth0|other")
    tenant.logins("auth0|picky", "auth0|other")
    # The org's validation rule refuses both leads at first: a permanent failure per user.
    sandbox.salesforce.validation_rules.append(lambda lead: "Leads need a phone number")
    first = cli("--run-once")
    assert first.code == 0
    assert first.event("cycle_finished")["failed"] == {"FIELD_CUSTOM_VALIDATION_EXCEPTION": 2}
    sandbox.salesforce.validation_rules.clear()  # the admin relaxed the rule

    assert cli("--run-once").code == 0
    assert sandbox.salesforce.leads == {}  # failed users stay failed until someone says otherwise

    retried = cli("retry", "auth0|picky", "auth0|typo")
    assert retried.code == 0 and "1 user(s) pending again" in retried.stdout
    assert "auth0|typo: not in the state database" in retried.stderr  # a typo is named, not passed over
    both = cli("retry", "auth0|other", "--all-failed")
    assert both.code == 78 and "not both" in both.stderr
    assert cli("--run-once").event("cycle_finished")["leads_created"] == 1
    assert cli("retry", "--all-failed").stdout.startswith("1 user(s)")
    assert cli("--run-once").event("cycle_finished")["leads_created"] == 1
    assert len(sandbox.salesforce.leads) == 2


def test_retry_without_users_says_what_to_give(sandbox, cli):
    run = cli("retry")
    assert run.code == 78 and "--all-failed" in run.stderr


def test_an_api_without_collections_gets_leads_one_by_one(sandbox, tenant, cli):
    for n in range(3):
        tenant.user(f"auth0|solo{n}")
        tenant.logins(f"auth0|solo{n}")
    sandbox.salesforce.fail("POST", r"/services/data/v[\d.]+/composite/sobjects", status=404, body=[{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}], times=-1)

    run = cli("--run-once")

    assert run.code == 0
    assert run.event("salesforce_collections_unavailable")["level"] == "warning"
    assert len(sandbox.salesforce.leads) == 3
    assert len(sandbox.salesforce.calls("POST", r"/services/data/v[\d.]+/sobjects/Lead/?")) == 3


NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]


def test_an_api_with_only_the_basic_endpoints_still_gets_every_lead(sandbox, tenant, cli):
    """A Salesforce-compatible API without the Lead describe or sObject Collections, and an Auth0
    without user search: the standard Lead lengths stand in for the describe, leads go one by one,
    profiles are read one by one."""
    for n in range(3):
        tenant.user(f"auth0|basic{n}", family_name="L" * 100)
        tenant.logins(f"auth0|basic{n}")
    tenant.logins("auth0|deleted")  # no such user, and no search to look for a primary with
    auth0_not_found = {"statusCode": 404, "error": "Not Found", "message": "Not Found"}
    sandbox.salesforce.fail("GET", r"/services/data/v[\d.]+/sobjects/Lead/describe/?", status=404, body=NOT_FOUND, times=-1)
    sandbox.salesforce.fail("POST", r"/services/data/v[\d.]+/composite/sobjects", status=404, body=NOT_FOUND, times=-1)
    sandbox.auth0.fail("GET", "/api/v2/users", status=404, body=auth0_not_found, times=-1)
    sandbox.auth0.fail("GET", r"/api/v2/logs/\d+", status=404, body=auth0_not_found, times=-1)

    run = cli("--run-once")

    assert run.code == 0, run.stdout[-3000:] + run.stderr
    assert run.event("salesforce_describe_missing")["level"] == "warning"
    assert len(sandbox.salesforce.leads) == 3
    assert {len(lead["LastName"]) for lead in sandbox.salesforce.leads.values()} == {80}  # the standard length
    assert all(u["app_metadata"].get("recordedAsLead") is True for u in sandbox.auth0.users.values())
    assert run.event("cycle_finished")["skipped"] == {"user_not_found": 1}
    assert sandbox.auth0.tokens_issued == 1 and sandbox.salesforce.tokens_issued == 1
    tenant.logins("auth0|basic0")
    assert cli("--run-once").code == 0 and len(sandbox.salesforce.leads) == 3

    # check says what it cannot verify on such an API, and fails nothing that the run gets past.
    checked = cli("check")
    assert checked.code == 0, checked.stdout
    warned = {line.split()[1] + " " + line.split()[2] for line in checked.stdout.splitlines() if line.startswith("warn")}
    assert warned == {"auth0 checkpoint", "lead fields"}, checked.stdout
    assert "salesforce api usage" in checked.stdout and "FAIL" not in checked.stdout


def test_without_a_describe_a_mapping_with_a_custom_field_stops_with_78_rather_than_guess(sandbox, tenant, cli):
    tenant.user("auth0|custom")
    tenant.logins("auth0|custom")
    sandbox.salesforce.fail("GET", r"/services/data/v[\d.]+/sobjects/Lead/describe/?", status=404, body=NOT_FOUND, times=-1)
    config = sandbox.write_config(lead={"fields": {"Plan__c": {"value": "gold"}}})

    run = cli("--run-once", config=config)

    assert run.code == 78, run.stdout[-3000:] + run.stderr
    assert "no Lead describe" in run.stderr and "custom fields or external_id_field need" in run.stderr
    assert sandbox.salesforce.leads == {}
    checked = cli("check", config=config)
    assert checked.code == 78 and "which custom fields and external_id_field need" in checked.stdout


def test_single_upsert_by_external_id_url_encodes_the_auth0_id(sandbox, tenant, cli):
    sandbox.salesforce.add_field({"name": "Auth0_User_Id__c", "label": "Auth0 User Id", "type": "string", "length": 255, "externalId": True, "unique": True, "caseSensitive": True})
    tenant.user("google-oauth2|1234567890")
    tenant.logins("google-oauth2|1234567890")
    config = sandbox.write_config(salesforce={"external_id_field": "Auth0_User_Id__c"})

    assert cli("--run-once", config=config).code == 0

    (upsert,) = sandbox.salesforce.calls("PATCH", r"/services/data/v[\d.]+/sobjects/Lead/Auth0_User_Id__c/.+")
    assert upsert.raw_path.endswith("/Auth0_User_Id__c/google-oauth2%7C1234567890")
    (lead,) = sandbox.salesforce.leads.values()
    assert lead["Auth0_User_Id__c"] == "google-oauth2|1234567890"


def test_a_lookup_answered_in_several_pages_is_read_to_the_end(sandbox, tenant, cli):
    """Salesforce pages query results (2,000 rows at a time): a lead on the second page must still be
    found, or it would be created twice."""
    first, second = sandbox.salesforce.add_leads(
        [{"LastName": "A", "Company": "X", "Email": "pa@example.com"}, {"LastName": "B", "Company": "X", "Email": "pb@example.com"}]
    )
    tenant.user("auth0|pa", email="pa@example.com")
    tenant.user("auth0|pb", email="pb@example.com")
    tenant.logins("auth0|pa", "auth0|pb")
    rest = r"/services/data/v[\d.]+"
    attributes = {"type": "Lead"}
    sandbox.salesforce.fail(
        "GET", rest + "/query/?", status=200, times=1,
        body={"totalSize": 2, "done": False, "nextRecordsUrl": "/services/data/v59.0/query/01gPAGE-2000", "records": [{"attributes": attributes, "Id": first, "Email": "pa@example.com"}]},
    )
    sandbox.salesforce.fail(
        "GET", rest + "/query/01gPAGE-2000", status=200, times=1,
        body={"totalSize": 2, "done": True, "records": [{"attributes": attributes, "Id": second, "Email": "pb@example.com"}]},
    )

    run = cli("--run-once")

    assert run.code == 0
    assert len(sandbox.salesforce.leads) == 2 and run.event("cycle_finished")["leads_reused"] == 2


def test_reset_checkpoint_unwedges_a_refused_checkpoint(sandbox, tenant, cli):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    assert cli("--run-once").code == 0
    sandbox.auth0.fail("GET", "/api/v2/logs", status=400, times=1, body={"statusCode": 400, "error": "Bad Request", "message": "Invalid request URI", "errorCode": "invalid_uri"})
    refused = cli("--run-once")
    assert refused.code == 65 and "reset-checkpoint" in refused.stderr

    reset = run_cli_without_secrets(sandbox, "reset-checkpoint")
    assert reset.code == 0 and "forgotten" in reset.stdout
    tenant.user("auth0|b")
    tenant.logins("auth0|b")
    assert cli("--run-once").code == 0  # start_from = "oldest" again: a's login is read again, harmlessly
    assert len(sandbox.salesforce.leads) == 2


def run_cli_without_secrets(sandbox, *args):
    from tests.conftest import run_cli

    return run_cli("--config", sandbox.workdir / "config.toml", *args)


def test_retry_needs_no_secrets_and_works_beside_a_running_poller(sandbox, tenant, cli):
    from poller.ledger import Ledger

    tenant.user("auth0|f")
    tenant.logins("auth0|f")
    sandbox.salesforce.validation_rules.append(lambda lead: "no")
    assert cli("--run-once").code == 0
    with Ledger(sandbox.workdir / "state.db", clock=lambda: 0.0):  # a poller holds the state
        run = run_cli_without_secrets(sandbox, "retry", "auth0|f")
    assert run.code == 0 and "1 user(s) pending again" in run.stdout
