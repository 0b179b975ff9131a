"""`lead-poller status`: from the state database only, with a documented, stable JSON document."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from poller.pipeline import newest_event_time
from poller.status import iso
from tests.conftest import run_cli

README = Path(__file__).resolve().parents[1] / "README.md"
JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "object": dict, "array": list, "boolean": bool, "null": type(None)}


def documented(section: str) -> dict[str, str]:
    """The rows of a README table between `<!-- NAME:start -->` and `<!-- NAME:end -->`: first column -> second."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {section}:start -->(.*?)<!-- {section}:end -->", text, re.S)
    assert match, f"README has no {section} table"
    rows = {}
    for line in match.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def walk(value: Any, path: str, docs: dict[str, str], seen: dict[str, Any]) -> None:
    """Check `value` against the documented type of `path`, then its children."""
    assert path in docs, f"status --json has {path!r}, which the README does not document"
    allowed = tuple(JSON_TYPES[t.strip()] for t in docs[path].split(" or "))
    assert isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed), f"{path} = {value!r} is not {docs[path]}"
    seen[path] = value
    if isinstance(value, dict):
        for key, child in value.items():
            named = f"{path}.{key}" if path else key
            wildcard = next((d for d in docs if re.fullmatch(re.escape(path) + r"\.<[a-z_]+>", d)), None)
            walk(child, named if named in docs or wildcard is None else wildcard, docs, seen)
    elif isinstance(value, list):
        for item in value:
            walk(item, f"{path}[]", docs, seen)


def check_against_readme(document: dict[str, Any]) -> dict[str, Any]:
    docs = documented("status-json")
    docs[""] = "object"
    seen: dict[str, Any] = {}
    walk(document, "", docs, seen)
    return seen


@pytest.fixture
def worked_state(sandbox, tenant, cli):
    """A state after one cycle with leads, a skip, a permanent failure and a user waiting for a retry."""
    tenant.user("auth0|ok1")
    tenant.user("auth0|ok2")
    tenant.user("auth0|noemail", email=None)
    tenant.user("auth0|rejected", family_name="Rejected")
    tenant.user("auth0|flaky")
    sandbox.salesforce.validation_rules.append(lambda lead: "Rejected leads are blocked" if lead.get("LastName") == "Rejected" else None)
    # Rate-limited for an hour: longer than the cycle's deadline, so the user waits for a later cycle.
    too_many = {"statusCode": 429, "error": "Too Many Requests", "message": "Global limit has been reached", "errorCode": "too_many_requests"}
    sandbox.auth0.fail("PATCH", r"/api/v2/users/auth0\|flaky", status=429, body=too_many, headers={"Retry-After": "3600"}, times=-1)
    tenant.logins("auth0|ok1", "auth0|ok2", "auth0|noemail", "auth0|rejected", "auth0|flaky", "auth0|ok1")
    run = cli("--run-once")
    assert run.code == 75, run.stderr  # the flaky user waits for a retry
    return sandbox.workdir / "config.toml"


def test_status_json_follows_the_readme_and_tells_where_everything_stands(sandbox, worked_state):
    sandbox.auth0.clear_log()
    sandbox.salesforce.clear_log()

    run = run_cli("status", "--config", worked_state, "--json")  # no secrets in the environment: none needed

    assert run.code == 0, run.stderr
    assert sandbox.auth0.requests == [] and sandbox.salesforce.requests == []
    document = json.loads(run.stdout)
    seen = check_against_readme(document)
    assert seen["checkpoint.log_id"] == sandbox.auth0.logs[-1]["log_id"]
    assert document["log"]["newest_event_at"] == iso(newest_event_time(sandbox.auth0.logs))
    assert document["users"] == {"pending": 1, "recorded": 2, "skipped": 1, "failed": 1}
    assert document["failures"] == [{"code": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "users": 1, "example_user_ids": ["auth0|rejected"]}]
    assert document["skips"] == [{"code": "no_email", "users": 1, "example_user_ids": ["auth0|noemail"]}]
    assert document["retries"]["waiting"] == 1 and document["retries"]["next"][0]["user_id"] == "auth0|flaky"
    assert document["retries"]["next"][0]["code"] == "auth0_rate_limited"
    last = document["last_cycle"]
    assert last["outcome"] == "partial" and last["counts"]["leads_created"] == 3 and last["counts"]["login_events"] == 6
    assert document["salesforce_api"]["limit"] == 15000 and document["salesforce_api"]["used"] >= 2
    assert document["totals"]["cycles"] == {"partial": 1} and document["totals"]["retrying"] == {"auth0_rate_limited": 1}
    assert document["totals"]["rate_limited"] == {"auth0": 1}
    assert any("1 user(s) failed" in note for note in document["attention"])


def test_status_works_with_both_vendors_gone_and_reads_as_a_summary(sandbox, worked_state):
    sandbox.close()  # no network at all from here on

    run = run_cli("status", "--config", worked_state)

    assert run.code == 0, run.stderr
    for expected in ("2 recorded, 1 pending, 1 skipped, 1 failed", "FIELD_CUSTOM_VALIDATION_EXCEPTION: 1 (e.g. auth0|rejected)", "auth0|flaky", "Needs attention:"):
        assert expected in run.stdout


def test_status_without_a_state_database_says_so(sandbox, tmp_path):
    config = sandbox.write_config(tmp_path / "fresh.toml", state_path=tmp_path / "none" / "state.db")
    run = run_cli("status", "--config", config)
    assert run.code == 1 and "no state database" in run.stderr
    assert not (tmp_path / "none").exists()
