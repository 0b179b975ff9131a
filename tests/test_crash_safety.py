"""Exactly one lead per user, even across crashes: SIGKILL the real CLI at each step boundary, rerun.

The emulators kill the poller process from inside the request that marks the boundary (before the
answer, or after the write happened and before the answer), so the kill lands exactly there.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.conftest import run_cli, start_cli

REST = r"/services/data/v[\d.]+"
EXTERNAL_ID = {"name": "Auth0_User_Id__c", "label": "Auth0 User Id", "type": "string", "length": 255, "externalId": True, "unique": True, "caseSensitive": True}


def seed(tenant) -> set[str]:
    """60 eligible users over 3 pages of logs, plus users who must not become leads."""
    eligible = set()
    for n in range(60):
        user_id = f"auth0|crash{n:02d}"
        tenant.user(user_id, given_name=f"User{n}", app_metadata={"plan": "free"})
        eligible.add(user_id)
    tenant.user("auth0|flagged", app_metadata={"recordedAsLead": True})
    tenant.user("sms|+15555550123", email=None)
    order = sorted(eligible) + ["auth0|flagged", "sms|+15555550123"]
    for round_ in range(4):
        for user_id in order:
            tenant.event("s" if round_ % 2 == 0 else "seacft", user_id)
    return eligible


def kill_point(sandbox, point: str, kill) -> None:
    if point == "during_ingest":
        seen = {"n": 0}

        def second_page(request) -> bool:
            if "from" not in request.query:
                return False
            seen["n"] += 1
            return seen["n"] == 2

        sandbox.auth0.fail("GET", "/api/v2/logs", when=second_page, hang=True, then=kill)
    elif point == "during_profile_reads":
        sandbox.auth0.fail("GET", r"/api/v2/users/.+", hang=True, then=kill)
    elif point == "after_lead_write":
        method, path = ("PATCH", REST + "/composite/sobjects/Lead/.+") if sandbox.salesforce_upsert else ("POST", REST + "/composite/sobjects")
        sandbox.salesforce.fail(method, path, after=True, hang=True, then=kill)
    elif point == "before_write_back":
        sandbox.auth0.fail("PATCH", r"/api/v2/users/.+", hang=True, then=kill)
    elif point == "after_write_back":
        count = {"n": 0}

        def fifth(request) -> bool:
            count["n"] += 1
            return count["n"] == 5

        sandbox.auth0.fail("PATCH", r"/api/v2/users/.+", when=fifth, after=True, hang=True, then=kill)
    else:
        raise AssertionError(point)


@pytest.mark.parametrize("mode", ["create", "upsert"])
@pytest.mark.parametrize("point", ["during_ingest", "during_profile_reads", "after_lead_write", "before_write_back", "after_write_back"])
def test_sigkill_at_each_step_boundary_then_rerun(point, mode, sandbox, tenant):
    eligible = seed(tenant)
    sandbox.salesforce_upsert = mode == "upsert"
    salesforce = {}
    if mode == "upsert":
        sandbox.salesforce.add_field(EXTERNAL_ID)
        salesforce = {"external_id_field": "Auth0_User_Id__c"}
    config = sandbox.write_config(salesforce=salesforce, work={"concurrency": 1})
    env = sandbox.env()
    killed: dict[str, object] = {"done": False}

    def kill() -> None:
        killed["done"] = True
        os.kill(killed["pid"], signal.SIGKILL)  # type: ignore[arg-type]

    kill_point(sandbox, point, kill)  # armed before the process starts: no race
    process = start_cli("--config", config, "--run-once", env=env)
    killed["pid"] = process.pid
    process.communicate(timeout=60)
    assert killed["done"] and process.returncode == -signal.SIGKILL
    sandbox.auth0.clear_faults()
    sandbox.salesforce.clear_faults()

    rerun = run_cli("--config", config, "--run-once", env=env)
    assert rerun.code == 0, rerun.stdout[-2000:] + rerun.stderr

    by_email: dict[str, list[str]] = {}
    for lead_id, lead in sandbox.salesforce.leads.items():
        by_email.setdefault(lead["Email"].lower(), []).append(lead_id)
    assert all(len(ids) == 1 for ids in by_email.values()), {e: ids for e, ids in by_email.items() if len(ids) > 1}
    assert set(by_email) == {f"{u.split('|')[1]}@example.com" for u in eligible}  # no eligible login lost
    for user_id in eligible:
        app_metadata = sandbox.auth0.users[user_id]["app_metadata"]
        assert app_metadata["recordedAsLead"] is True and app_metadata["plan"] == "free"
        assert by_email[f"{user_id.split('|')[1]}@example.com"] == [app_metadata["salesforceLeadId"]]
    assert "recordedAsLead" not in (sandbox.auth0.users["sms|+15555550123"].get("app_metadata") or {})
    if mode == "upsert":
        assert {lead["Auth0_User_Id__c"] for lead in sandbox.salesforce.leads.values()} == eligible


def test_an_uncertain_write_is_found_even_if_the_email_changed_before_the_retry(sandbox, tenant):
    """The lead was written but the answer was lost; before the retry the user changed address."""
    tenant.user("auth0|mover", email="old@example.com")
    tenant.logins("auth0|mover")
    config = sandbox.write_config()
    sandbox.salesforce.fail("POST", REST + "/sobjects/Lead/?", after=True, drop=True)

    first = run_cli("--config", config, "--run-once", env=sandbox.env())

    assert first.code == 75 and len(sandbox.salesforce.leads) == 1
    sandbox.auth0.users["auth0|mover"]["email"] = "new@example.com"
    import sqlite3

    db = sqlite3.connect(sandbox.workdir / "state.db")
    db.execute("UPDATE users SET next_attempt_at = 0")
    db.commit()
    second = run_cli("--config", config, "--run-once", env=sandbox.env())
    (intent,) = db.execute("SELECT intent_email FROM users").fetchone()
    db.close()
    assert second.code == 0
    assert len(sandbox.salesforce.leads) == 1  # found by the address the first write used
    assert sandbox.auth0.users["auth0|mover"]["app_metadata"]["salesforceLeadId"] in sandbox.salesforce.leads
    assert intent is None  # the address is not kept once the outcome is known
