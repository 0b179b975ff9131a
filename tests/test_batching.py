"""The batched paths, through the sandbox with the real CLI: profile reads through user search (with
the exact per-user read wherever the index could mislead), Salesforce batches of up to 200 with each
record's own outcome, and pacing to Auth0's rate-limit headers."""

from __future__ import annotations

import re
import time

import pytest

from poller.ledger import Ledger
from poller.sandbox.auth0 import RateLimits

SEARCH = r"/api/v2/users"
ONE_USER = r"/api/v2/users/.+"


def outcomes(sandbox) -> dict[str, tuple[str, str | None]]:
    """user id -> (status, reason) as the run left them in the ledger."""
    with Ledger(sandbox.workdir / "state.db", clock=time.time) as ledger:
        return {row.user_id: (row.status, row.reason) for row in ledger.users()}


def user_searches(sandbox) -> list:
    return [c for c in sandbox.auth0.calls("GET", SEARCH) if c.query.get("q", "").startswith("user_id:(")]


# --- batched profile reads ----------------------------------------------------------------------


def mixed_tenant(tenant, sandbox) -> dict[str, tuple[str, str | None]]:
    """Users whose profiles the search index gives, lags behind on, or cannot give; and the outcome each
    must have whichever way its profile was read."""
    for name in ("flag1", "flag2", "flag3"):
        tenant.user(f"auth0|{name}", app_metadata={"recordedAsLead": True, "plan": "pro"})
    tenant.user("auth0|new1")
    tenant.user("auth0|new2")
    tenant.user("auth0|lagging")  # signed up a moment ago: not in the search index yet
    tenant.user("auth0|lagflag", app_metadata={"recordedAsLead": True})
    sandbox.auth0.search_index_lag = {"auth0|lagging", "auth0|lagflag"}
    tenant.user("sms|+12025550100", email=None, phone_number="+12025550100")
    # A linked account: the log names the secondary identity; Auth0 keeps only the primary user.
    tenant.user("auth0|primary", email="primary@example.com",
                identities=[{"provider": "auth0", "user_id": "primary", "connection": "db", "isSocial": False},
                            {"provider": "google-oauth2", "user_id": "1234567890", "connection": "google-oauth2", "isSocial": True}])
    tenant.logins("auth0|flag1", "auth0|flag2", "auth0|flag3", "auth0|new1", "auth0|new2", "auth0|lagging",
                  "auth0|lagflag", "sms|+12025550100", "google-oauth2|1234567890", "auth0|deleted", "auth0|new1")
    return {
        "auth0|flag1": ("recorded", "already_flagged"),
        "auth0|flag2": ("recorded", "already_flagged"),
        "auth0|flag3": ("recorded", "already_flagged"),
        "auth0|new1": ("recorded", None),
        "auth0|new2": ("recorded", None),
        "auth0|lagging": ("recorded", None),
        "auth0|lagflag": ("recorded", "already_flagged"),
        "sms|+12025550100": ("skipped", "no_email"),
        "auth0|deleted": ("skipped", "user_not_found"),
    }


def settled(sandbox) -> dict[str, tuple[str, str | None]]:
    """The outcomes, less the linked account's: its lead is made for the primary user, but the
    write-back goes to the secondary id (a 404) whichever way the profile was read."""
    found = outcomes(sandbox)
    found.pop("google-oauth2|1234567890")
    return found


@pytest.mark.parametrize("batched", [True, False])
def test_profile_reads_give_the_same_outcomes_batched_or_one_by_one(sandbox, tenant, cli, batched):
    expected = mixed_tenant(tenant, sandbox)
    config = sandbox.write_config(work={"batch_profile_reads": batched})

    run = cli("--run-once", config=config)

    assert run.code == 0, run.stdout + run.stderr
    assert settled(sandbox) == expected
    leads = {lead["Email"] for lead in sandbox.salesforce.leads.values()}
    assert leads == {"new1@example.com", "new2@example.com", "lagging@example.com", "primary@example.com"}
    read = sorted(c.path.rsplit("/", 1)[-1] for c in sandbox.auth0.calls("GET", ONE_USER))
    if batched:
        # One search for the batch; it settles the three flagged users it returns. Everyone else is
        # read exactly: whoever might need a lead, and whoever the index does not return.
        (search,) = user_searches(sandbox)
        assert search.query["search_engine"] == "v3" and search.query["per_page"] == "10"
        assert read == sorted(["auth0|new1", "auth0|new2", "auth0|lagging", "auth0|lagflag", "sms|+12025550100",
                               "google-oauth2|1234567890", "auth0|deleted"])
    else:
        assert user_searches(sandbox) == [] and len(read) == 10


@pytest.mark.parametrize("status", [400, 503])
def test_a_refused_or_failing_search_falls_back_to_reading_each_user(sandbox, tenant, cli, status):
    expected = mixed_tenant(tenant, sandbox)
    sandbox.auth0.fail("GET", SEARCH, status=status, times=1,
                       body={"statusCode": status, "error": "Bad Request" if status == 400 else "Service Unavailable",
                             "message": "The query exceeded the timeout" if status == 503 else "Query validation error"})

    run = cli("--run-once")

    assert run.code == 0, run.stdout + run.stderr
    assert settled(sandbox) == expected
    assert len(user_searches(sandbox)) == 1  # not retried: the users are read one by one instead
    assert len(sandbox.auth0.calls("GET", ONE_USER)) == 10
    assert run.event("auth0_search_fallback")["users"] == 10


def test_a_search_reads_at_most_100_users(sandbox, tenant, cli):
    for i in range(150):
        tenant.user(f"auth0|old{i:03d}", app_metadata={"recordedAsLead": True})
        tenant.logins(f"auth0|old{i:03d}")

    assert cli("--run-once").code == 0

    assert sorted(int(c.query["per_page"]) for c in user_searches(sandbox)) == [50, 100]
    assert sandbox.auth0.calls("GET", ONE_USER) == []
    assert [r.path for r in sandbox.salesforce.requests if "/query" in r.path or r.method != "GET"] == ["/services/oauth2/token"]


# --- Salesforce batches ---------------------------------------------------------------------------


@pytest.mark.parametrize("external_id", [None, "Auth0_User_Id__c"])
def test_one_salesforce_batch_records_each_leads_own_outcome(sandbox, tenant, cli, external_id):
    sf = sandbox.salesforce
    if external_id:
        sf.add_field({"name": external_id, "type": "string", "length": 255, "externalId": True, "unique": True, "caseSensitive": True})
    sf.duplicate_rule = "block"
    sf.add_contacts([{"LastName": "Known", "Email": "customer@example.com"}])  # already a customer
    sf.refused_emails = {"refused@example.com"}
    config = sandbox.write_config(salesforce={"external_id_field": external_id})
    # A run caches the Lead describe (refreshed daily); then an admin shortens FirstName to 10, so
    # until the next refresh our mapping truncates to the old length and the org refuses the value.
    assert cli("--run-once", config=config).code == 0
    sf.fields["Lead"]["FirstName"]["length"] = 10
    tenant.user("auth0|ok1", given_name="Ada", family_name="Lovelace")
    tenant.user("auth0|refused", email="refused@example.com")
    tenant.user("auth0|customer", email="customer@example.com")
    tenant.user("auth0|long", given_name="Maximiliana", family_name="Long")
    tenant.user("auth0|ok2", given_name="Grace", family_name="Hopper")
    tenant.user("auth0|twin", email="OK2@example.com")  # another login of the same person: shares the lead
    tenant.logins("auth0|ok1", "auth0|refused", "auth0|customer", "auth0|long", "auth0|ok2", "auth0|twin")

    run = cli("--run-once", config=config)

    assert run.code == 0, run.stdout + run.stderr  # refusals are permanent: recorded, not retried
    (write,) = sf.calls(None, r".*/composite/sobjects.*")
    assert len(write.json()["records"]) == 5 and write.json()["allOrNone"] is False
    # One lookup of open leads; one more reads the contact the duplicate rule matched (same email?).
    assert [c.query["q"].split(" WHERE ")[0] for c in sf.calls("GET", r".*/query/?")] == ["SELECT Id, Email FROM Lead", "SELECT Id, Email FROM Contact"]
    assert outcomes(sandbox) == {
        "auth0|ok1": ("recorded", None),
        "auth0|refused": ("failed", "INVALID_EMAIL_ADDRESS"),
        "auth0|customer": ("skipped", "existing_contact"),
        "auth0|long": ("failed", "STRING_TOO_LONG"),
        "auth0|ok2": ("recorded", None),
        "auth0|twin": ("recorded", None),
    }
    leads = {lead["Email"].lower(): lead["Id"] for lead in sf.leads.values()}
    assert set(leads) == {"ok1@example.com", "ok2@example.com"}
    meta = {uid: sandbox.auth0.users[uid].get("app_metadata", {}) for uid in ("auth0|ok2", "auth0|twin", "auth0|long")}
    assert meta["auth0|ok2"]["salesforceLeadId"] == meta["auth0|twin"]["salesforceLeadId"] == leads["ok2@example.com"]
    assert "recordedAsLead" not in meta["auth0|long"]
    assert run.event("cycle_finished")["failed"] == {"INVALID_EMAIL_ADDRESS": 1, "STRING_TOO_LONG": 1}


def another_john_smith(sandbox, tenant, shape: str, *, rule: str) -> str:
    """A lead of another John Smith at Acme, which the standard duplicate rule matches, and our John
    Smith signing in (with Ada beside him for the batch shape). Returns the other John's lead id."""
    sf = sandbox.salesforce
    sf.duplicate_rule, sf.duplicate_match = rule, "standard"
    (theirs,) = sf.add_leads([{"FirstName": "John", "LastName": "Smith", "Company": "Acme", "Email": "john@example.net"}])
    tenant.user("auth0|john", email="john.smith@example.com", given_name="John", family_name="Smith")
    tenant.logins("auth0|john")
    if shape == "batch":
        tenant.user("auth0|ada", given_name="Ada", family_name="Lovelace")
        tenant.logins("auth0|ada")
    return theirs


@pytest.mark.parametrize("shape", ["single", "batch"])
def test_a_duplicate_rule_match_on_another_persons_name_is_not_adopted(sandbox, tenant, cli, shape):
    # Salesforce's standard matching rules also match on first name, last name and company, and the
    # company is one for everyone: another John Smith's lead must not become this John Smith's.
    sf = sandbox.salesforce
    theirs = another_john_smith(sandbox, tenant, shape, rule="block")

    run = cli("--run-once", config=sandbox.write_config(salesforce={"company": "Acme"}))

    assert run.code == 0, run.stdout + run.stderr
    assert outcomes(sandbox)["auth0|john"] == ("failed", "DUPLICATES_DETECTED")
    assert "another email" in run.event("user_failed")["error"]
    assert "app_metadata" not in sandbox.auth0.users["auth0|john"] or \
        sandbox.auth0.users["auth0|john"]["app_metadata"].get("salesforceLeadId") != theirs
    if shape == "batch":  # the batch's other lead is written all the same
        assert outcomes(sandbox)["auth0|ada"] == ("recorded", None)


@pytest.mark.parametrize("shape", ["single", "batch"])
@pytest.mark.parametrize("on_duplicate", ["allow_save", "skip"])
def test_on_duplicate_allow_save_writes_the_lead_and_skip_records_the_reason(sandbox, tenant, cli, shape, on_duplicate):
    # Another John Smith at Acme matches the standard rule; an alert rule lets a save through.
    sf = sandbox.salesforce
    theirs = another_john_smith(sandbox, tenant, shape, rule="alert" if on_duplicate == "allow_save" else "block")

    run = cli("--run-once", config=sandbox.write_config(salesforce={"company": "Acme", "on_duplicate": on_duplicate}))

    assert run.code == 0, run.stdout + run.stderr
    johns = {lead_id for lead_id, lead in sf.leads.items() if lead["LastName"] == "Smith"}
    if on_duplicate == "allow_save":
        assert outcomes(sandbox)["auth0|john"] == ("recorded", None)
        (ours,) = johns - {theirs}
        assert sf.leads[ours]["Email"] == "john.smith@example.com"
        assert sandbox.auth0.users["auth0|john"]["app_metadata"]["salesforceLeadId"] == ours
    else:
        assert outcomes(sandbox)["auth0|john"] == ("skipped", "duplicate")
        assert johns == {theirs} and "recordedAsLead" not in (sandbox.auth0.users["auth0|john"].get("app_metadata") or {})
    if shape == "batch":
        assert outcomes(sandbox)["auth0|ada"] == ("recorded", None)


def test_a_duplicate_inside_collections_without_the_matched_records_is_asked_again_alone(sandbox, tenant, cli):
    # Whether a Collections answer carries the duplicateResult is unconfirmed. Here it does not; the
    # record is sent again through the single-record endpoint, which names the match: a lead with
    # the user's own email, written after our lookup found none (the lookup answers as it did then).
    sf = sandbox.salesforce
    sf.duplicate_rule, sf.collection_duplicate_details = "block", False
    (raced,) = sf.add_leads([{"LastName": "Raced", "Company": "Acme", "Email": "racer@example.com"}])
    sf.fail("GET", r".*/query/?", status=200, body={"totalSize": 0, "done": True, "records": []},
            when=lambda request: "Email IN" in request.query.get("q", ""))
    tenant.user("auth0|racer")
    tenant.user("auth0|other")
    tenant.logins("auth0|racer", "auth0|other")

    run = cli("--run-once")

    assert run.code == 0, run.stdout + run.stderr
    assert outcomes(sandbox) == {"auth0|racer": ("recorded", None), "auth0|other": ("recorded", None)}
    assert sandbox.auth0.users["auth0|racer"]["app_metadata"]["salesforceLeadId"] == raced
    assert len(sf.calls("POST", r".*/composite/sobjects/?")) == 1 and len(sf.calls("POST", r".*/sobjects/Lead/?")) == 1
    assert sorted(lead["Email"] for lead in sf.leads.values()) == ["other@example.com", "racer@example.com"]


def test_a_lookup_of_long_addresses_is_split_to_stay_inside_the_url_limit(sandbox, tenant, cli):
    # 150 addresses of 70 characters: one `Email IN (...)` would need a URL of over 14,000 bytes.
    for i in range(150):
        user_id = f"auth0|long{i:03d}"
        tenant.user(user_id, email=f"{'x' * 50}.{i:03d}@subdomain.example.com")
        tenant.logins(user_id)

    run = cli("--run-once")

    assert run.code == 0, run.stderr
    lookups = [r for r in sandbox.salesforce.calls("GET", r".*/query/?") if "FROM Lead" in r.query.get("q", "")]
    assert len(lookups) == 2
    assert all(len(r.raw_path) <= 12_000 + 100 for r in lookups)  # MAX_QUERY_URL, plus the path
    asked = [email for r in lookups for email in re.findall(r"'([^']+)'", r.query["q"])]
    assert sorted(asked) == sorted(lead["Email"] for lead in sandbox.salesforce.leads.values()) and len(asked) == 150


def test_salesforce_batches_are_filled_across_profile_batches(sandbox, tenant, cli):
    # 450 users read 200 at a time, a third of them need a lead: 150 leads, one lookup, one write.
    for i in range(450):
        meta = None if i % 3 == 0 else {"recordedAsLead": True}
        tenant.user(f"auth0|u{i:03d}", app_metadata=meta)
        tenant.logins(f"auth0|u{i:03d}")

    run = cli("--run-once")

    assert run.code == 0, run.stderr
    assert len(sandbox.salesforce.leads) == 150
    assert len(sandbox.salesforce.calls("GET", r".*/query/?")) == 1
    (write,) = sandbox.salesforce.calls("POST", r".*/composite/sobjects/?")
    assert len(write.json()["records"]) == 150


# --- pacing ---------------------------------------------------------------------------------------


def test_paced_by_the_rate_limit_headers_no_user_meets_a_429(sandbox, tenant, cli):
    # Buckets smaller than the work: 30 profile reads (and a search) and 30 write-backs through
    # buckets of 20, with 8 calls at a time allowed.
    sandbox.auth0.rate_limits = RateLimits(logs=(5, 20.0), users_read=(20, 20.0), users_write=(20, 20.0), other=(5, 20.0))
    for i in range(30):
        tenant.user(f"auth0|r{i:02d}")
        tenant.logins(f"auth0|r{i:02d}")

    run = cli("--run-once", config=sandbox.write_config(work={"concurrency": 8}))

    assert run.code == 0, run.stdout + run.stderr
    assert sandbox.auth0.count_429 == {"logs": 0, "users_read": 0, "users_write": 0, "other": 0}
    assert len(sandbox.salesforce.leads) == 30
    assert set(outcomes(sandbox).values()) == {("recorded", None)}


def test_a_plan_with_one_bucket_for_the_whole_api_is_paced_as_one(sandbox, tenant, cli):
    # The Free plan: one bucket of 2 for every Management API call, sped up 10 times. Paced group by
    # group, the log feed, the readers and the writers would each spend what they think is theirs.
    sandbox.auth0.rate_limits = RateLimits.free(time_scale=10)
    for i in range(6):
        tenant.user(f"auth0|f{i:02d}")
        tenant.logins(f"auth0|f{i:02d}")

    run = cli("--run-once", config=sandbox.write_config(auth0={"rate_limit_buckets": "global"}, work={"concurrency": 4}))

    assert run.code == 0, run.stdout + run.stderr
    assert sum(sandbox.auth0.count_429.values()) == 0
    assert len(sandbox.salesforce.leads) == 6
    assert set(outcomes(sandbox).values()) == {("recorded", None)}


# --- the two stages side by side ------------------------------------------------------------------


def test_a_fatal_error_in_either_stage_stops_the_cycle_with_its_exit_code(sandbox, tenant, cli):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    sandbox.auth0.scopes = ("read:users", "update:users_app_metadata")  # no read:logs

    run = cli("--run-once")

    assert run.code == 77 and "read:logs" in run.stderr
    sandbox.auth0.scopes = ("read:logs", "read:users", "update:users_app_metadata")

    run = cli("--run-once", env={"SALESFORCE_CLIENT_SECRET": "not-the-secret"})

    assert run.code == 77 and "SALESFORCE_CLIENT_SECRET" in run.stderr
    assert outcomes(sandbox) == {"auth0|a": ("pending", None)}


def test_searches_stop_where_they_do_not_pay(sandbox, tenant, cli):
    # A new tenant: nobody is flagged yet, so a search settles nobody. After the first batch's two
    # searches, every profile is read on its own, as without batching.
    for i in range(450):
        tenant.user(f"auth0|n{i:03d}")
        tenant.logins(f"auth0|n{i:03d}")

    run = cli("--run-once")

    assert run.code == 0, run.stderr
    assert sorted(int(c.query["per_page"]) for c in user_searches(sandbox)) == [100, 100]
    assert len(sandbox.auth0.calls("GET", ONE_USER)) == 450
    assert len(sandbox.salesforce.leads) == 450
