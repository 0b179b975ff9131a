"""Every row of the failure table, provoked through the sandbox over HTTPS, with the outcome it promises.

The test is driven by `failures.RULES` itself: a row added to the table is tested here without
another line of code, and a row whose promise the code does not keep fails by name.
"""

from __future__ import annotations

import time

import pytest

from poller import failures
from poller.errors import ExitCode, FatalError
from poller.failures import Next, Rule

USER = "auth0|row-user"
SECOND = "auth0|second-user"
REST = r"/services/data/v[\d.]+"


def _status(rule: Rule) -> int:
    assert rule.status not in ("timeout", "connection", "tls"), "not an HTTP answer"
    if rule.status == "5xx":
        return 503
    if rule.status == "*":
        return 418
    return int(rule.status)


def _operation(rule: Rule) -> str:
    if rule.operation != "*":
        return rule.operation
    return "user_read" if rule.api == "auth0" else "lead_lookup"


def _body(rule: Rule) -> object:
    status = _status(rule)
    if rule.api == "auth0" and rule.operation == "token":
        return {"error": rule.vendor_code or "access_denied", "error_description": f"injected for {rule.code}"}
    if rule.api == "auth0":
        return {"statusCode": status, "error": "Injected", "message": f"injected for {rule.code}", "errorCode": rule.vendor_code or "injected"}
    if rule.operation == "token":
        return {"error": rule.vendor_code or "invalid_request", "error_description": f"injected for {rule.code}"}
    return [{"message": f"injected for {rule.code}", "errorCode": rule.vendor_code or "INJECTED"}]


ROUTES = {
    ("auth0", "token"): ("POST", "/oauth/token"),
    ("auth0", "logs"): ("GET", "/api/v2/logs"),
    ("auth0", "user_read"): ("GET", r"/api/v2/users/.+"),
    ("auth0", "user_write"): ("PATCH", r"/api/v2/users/.+"),
    ("auth0", "user_search"): ("GET", "/api/v2/users"),
    ("auth0", "log_search"): ("GET", "/api/v2/logs"),
    ("salesforce", "token"): ("POST", "/services/oauth2/token"),
    ("salesforce", "lead_lookup"): ("GET", REST + "/query/?"),
    ("salesforce", "contact_lookup"): ("GET", REST + "/query/?"),
    ("salesforce", "lead_describe"): ("GET", REST + "/sobjects/Lead/describe/?"),
}
# A batch of one lead goes to the single-record endpoint; two or more to sObject Collections.
SINGLE_WRITE = ("POST", REST + "/sobjects/Lead/?")
BATCH_WRITE = ("POST", REST + "/composite/sobjects")


def inject(sandbox, rule: Rule, times: int, shape: str) -> None:
    emulator = sandbox.auth0 if rule.api == "auth0" else sandbox.salesforce
    if rule.code == "salesforce_external_id_missing":  # only the upsert endpoints name an external id field
        method, path = ("PATCH", REST + "/sobjects/Lead/[^/]+/.+") if shape == "single" else ("PATCH", REST + "/composite/sobjects/Lead/[^/]+")
    elif rule.operation in ("lead_write", "lead_batch"):
        method, path = SINGLE_WRITE if shape == "single" else BATCH_WRITE
    else:
        method, path = ROUTES[(rule.api, _operation(rule))]
    # The lead and contact lookups share the query endpoint, and the log reads the log search's: the
    # SOQL, or the parameters, tell them apart.
    when = None
    if rule.operation == "contact_lookup":
        when = lambda request: "FROM Contact" in request.query.get("q", "")  # noqa: E731
    elif rule.operation == "log_search":
        when = lambda request: "from" not in request.query  # noqa: E731
    elif rule.operation == "logs":
        when = lambda request: "from" in request.query  # noqa: E731
    if rule.status == "tls":
        sandbox.distrust(emulator)
    elif rule.status == "timeout":
        emulator.fail(method, path, hang=True, times=times)
    elif rule.status == "connection":
        emulator.fail(method, path, drop=True, times=times)
    elif rule.operation == "lead_write":
        # A record's own refusal: a 400 with `errorCode` from the single-record endpoint, or inside a
        # successful Collections answer with `statusCode`, one per record.
        error = {"message": f"injected for {rule.code}", "fields": ["LastName"]}
        if rule.vendor_code == "DUPLICATES_DETECTED":
            # A race: the same person's lead was written after our lookup found none (the lookup is
            # answered as it was then), so the rule matches a lead with the user's own email.
            (existing,) = sandbox.salesforce.add_leads([{"LastName": "Matched", "Company": "Other", "Email": f"{USER.split('|')[1]}@example.com"}])
            emulator.fail("GET", REST + "/query/?", status=200, body={"totalSize": 0, "done": True, "records": []},
                          when=lambda request: "FROM Lead WHERE IsConverted = false AND Email" in request.query.get("q", ""))
            error["duplicateResult"] = {
                "allowSave": False,
                "matchResults": [{"entityType": "Lead", "matchRecords": [{"record": {"attributes": {"type": "Lead"}, "Id": existing}}]}],
            }
        if shape == "single":
            if rule.vendor_code:
                error["errorCode"] = rule.vendor_code
            emulator.fail(method, path, status=400, body=[error], times=times)
        else:
            if rule.vendor_code:
                error["statusCode"] = rule.vendor_code
            emulator.fail(method, path, status=200, body=[{"success": False, "errors": [error]}] * 2, times=times)
    else:
        headers = {}
        if _status(rule) == 429:
            headers = {"Retry-After": "0", "x-ratelimit-limit": "10", "x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(time.time()))}
        emulator.fail(method, path, status=_status(rule), body=_body(rule), headers=headers, times=times, when=when)


def setup_user(sandbox, tenant, rule: Rule, shape: str = "single") -> None:
    if rule.operation == "user_search":
        # The log names a linked secondary identity: the read 404s and the primary is searched for.
        tenant.user(
            "auth0|primary",
            identities=[
                {"provider": "auth0", "user_id": "primary", "connection": "Username-Password-Authentication", "isSocial": False},
                {"provider": "google-oauth2", "user_id": "linked-secondary", "connection": "google-oauth2", "isSocial": True},
            ],
        )
        tenant.logins("google-oauth2|linked-secondary")
        return
    if rule.next is Next.NOT_FOUND and rule.operation == "user_read":
        tenant.logins(USER)  # no profile: the user was deleted
        return
    tenant.user(USER, given_name="Row", family_name="User")
    tenant.logins(USER)
    if shape == "batch":
        tenant.user(SECOND, given_name="Second", family_name="User")
        tenant.logins(SECOND)


def user_row(app, user_id: str = USER):
    return app.ledger.get(user_id)


def rule_id(rule: Rule) -> str:
    return f"{rule.api}-{rule.operation}-{rule.status}-{rule.vendor_code or 'any'}".replace("*", "all")


CASES = [
    (rule, "single")
    for rule in failures.RULES
    # A single-record write's 400 is always that record's own refusal: the whole-batch row is for batches.
    if not (rule.operation == "lead_batch" and rule.status == "400")
] + [
    (rule, "batch") for rule in failures.RULES if rule.api == "salesforce" and rule.operation in ("lead_write", "lead_batch") and rule.status != "300"
]


@pytest.mark.parametrize("rule, shape", CASES, ids=[f"{rule_id(r)}-{shape}" for r, shape in CASES])
def test_every_row_keeps_its_promise(rule: Rule, shape: str, sandbox, tenant, make_app):
    setup_user(sandbox, tenant, rule, shape)
    user_id = "google-oauth2|linked-secondary" if rule.operation == "user_search" else USER
    persistent = rule.next in (Next.RETRY, Next.OUTAGE, Next.FATAL, Next.PERMANENT, Next.NOT_FOUND)
    inject(sandbox, rule, times=-1 if persistent else 1, shape=shape)
    salesforce = {"external_id_field": "Auth0_User_Id__c"} if rule.code == "salesforce_external_id_missing" else {}
    if salesforce:
        # The field exists when lead-poller checks the mapping at start; the upsert's 404 (the field
        # deleted, or hidden from the Run As user, since) is what this row is about.
        sandbox.salesforce.add_field({"name": "Auth0_User_Id__c", "type": "string", "length": 255, "externalId": True, "unique": True, "caseSensitive": True})
    lead: dict = {"skip_existing_contacts": True} if rule.operation == "contact_lookup" else {}
    if rule.operation == "lead_describe":
        # A custom field: the standard lengths cannot stand in for the describe, so the run stops
        # (with standard fields only, the leads are written: test_end_to_end covers that).
        sandbox.salesforce.add_field({"name": "Plan__c", "type": "string", "length": 20})
        lead["fields"] = {"Plan__c": {"value": "gold"}}
    app = make_app(http={"timeout_seconds": 0.5}, work={"backoff_base_seconds": 1, "backoff_cap_seconds": 1}, salesforce=salesforce, lead=lead)

    if rule.next is Next.FATAL:
        with pytest.raises(FatalError) as caught:
            app.run_cycle()
        assert caught.value.code == rule.code
        assert caught.value.exit_code == rule.exit_code != ExitCode.OK
        return

    report = app.run_cycle()
    row = user_row(app, user_id)

    if rule.next in (Next.RETRY, Next.OUTAGE):
        assert report.exit_code == ExitCode.TEMPORARY
        if rule.operation == "logs" or (rule.api == "auth0" and rule.operation == "token"):
            assert report.ingest_error == rule.code  # ingest pauses; the checkpoint stays where it was
            assert app.ledger.checkpoint is None and row is None
        else:
            assert (row.status, row.reason, row.attempts) == ("pending", rule.code, 1)
            assert report.retrying == {rule.code: 2 if shape == "batch" else 1}
        # The fault passes: the next due cycle finishes the job.
        sandbox.auth0.clear_faults()
        sandbox.salesforce.clear_faults()
        app.ledger._db.execute("UPDATE users SET next_attempt_at = 0")
        again = app.run_cycle()
        assert again.exit_code == ExitCode.OK
        assert user_row(app, user_id).status == "recorded"
        assert len(sandbox.salesforce.leads) == (2 if shape == "batch" else 1)
    elif rule.next is Next.WAIT:
        assert report.exit_code == ExitCode.OK
        assert (row.status, row.attempts) == ("recorded", 0)
    elif rule.next is Next.REFRESH:
        assert report.exit_code == ExitCode.OK and row.status == "recorded"
        issued = sandbox.auth0.tokens_issued if rule.api == "auth0" else sandbox.salesforce.tokens_issued
        assert issued == 2
    elif rule.next is Next.PERMANENT:
        if rule.code == "user_not_found":
            assert (row.status, row.reason) == ("skipped", "user_not_found")
        else:
            assert (row.status, row.reason) == ("failed", rule.code)
            assert report.failed == {rule.code: 2 if shape == "batch" else 1}
        assert report.exit_code == ExitCode.OK
    elif rule.next is Next.DAILY_LIMIT:
        assert report.exit_code == ExitCode.TEMPORARY and report.salesforce_paused == rule.code
        assert (row.status, row.attempts) == ("pending", 0)
        assert sandbox.salesforce.calls("POST", SINGLE_WRITE[1]) == [] and sandbox.salesforce.calls("POST", BATCH_WRITE[1]) == []
    elif rule.next is Next.NOT_FOUND:
        assert (row.status, row.reason) == ("skipped", "user_not_found")
        assert sandbox.auth0.calls("GET", "/api/v2/users")  # the primary was searched for
        if rule.operation == "user_write":
            assert len(sandbox.salesforce.leads) == 1  # the lead stays; nothing is undone
    elif rule.next is Next.DUPLICATE:
        (adopted,) = [lead_id for lead_id, lead in sandbox.salesforce.leads.items() if lead["LastName"] == "Matched"]
        assert (row.status, row.lead_id) == ("recorded", adopted)
        assert sandbox.auth0.users[USER]["app_metadata"]["salesforceLeadId"] == adopted
    else:  # pragma: no cover - a new kind of promise needs a new branch here
        pytest.fail(f"no expectation for {rule.next}")


@pytest.mark.parametrize("rule", [r for r in failures.RULES if r.next is Next.REFRESH], ids=rule_id)
def test_a_second_401_after_a_new_token_is_fatal(rule: Rule, sandbox, tenant, make_app):
    setup_user(sandbox, tenant, rule)
    inject(sandbox, rule, times=-1, shape="single")
    app = make_app()
    with pytest.raises(FatalError) as caught:
        app.run_cycle()
    assert caught.value.exit_code == ExitCode.CREDENTIALS
    issued = sandbox.auth0.tokens_issued if rule.api == "auth0" else sandbox.salesforce.tokens_issued
    assert issued == 2  # exactly one new token, not a loop
