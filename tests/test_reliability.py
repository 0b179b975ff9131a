"""Faults and odd input that production brings: outages, deadlines, retention gaps, bad events and
profiles, broken state. Each through the sandbox over HTTPS, through the CLI where the exit code matters."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from poller.errors import ExitCode
from poller.sandbox.scenario import make_log_id, user_profile

FIXTURES = Path(__file__).parent / "fixtures"
REST = r"/services/data/v[\d.]+"


def _load(name: str):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def _expand(value):
    if value == "auth0|LONGID":
        return "auth0|" + "x" * 2000
    if value == "LONGNAME":
        return "Ł" * 5000
    return value


def test_bad_events_and_odd_profiles_never_crash_a_cycle(sandbox, cli):
    start = datetime(2026, 12, 1, tzinfo=timezone.utc)
    events = []
    for seq, raw in enumerate(_load("bad_events.json"), start=1):
        event = {"log_id": make_log_id(start + timedelta(seconds=seq), seq), "date": (start + timedelta(seconds=seq)).isoformat()}
        event.update({k: _expand(v) for k, v in raw.items() if k != "_comment"})
        events.append(event)
    sandbox.auth0.add_logs(events)
    profiles = []
    for user_id, fields in _load("bad_profiles.json").items():
        user_id = _expand(user_id)
        profile = user_profile(user_id, email=None)
        profile.update({k: _expand(v) for k, v in fields.items()})
        profiles.append(profile)
    sandbox.auth0.add_users(profiles)

    run = cli("--run-once")

    assert run.code == 0, run.stdout[-3000:] + run.stderr
    db = sqlite3.connect(sandbox.workdir / "state.db")
    rows = {user_id: (status, reason) for user_id, status, reason in db.execute("SELECT user_id, status, reason FROM users")}
    db.close()
    long_id = "auth0|" + "x" * 2000
    assert set(rows) == {
        "auth0|minimal", "auth0|ipv6", "auth0|oddshape", "auth0|baddate", "auth0|spaces",
        "auth0|üñíçødé-用户", long_id, "auth0|ghost", "auth0|numbername",
    }  # events without a usable user id or type are not logins; nothing else is dropped
    assert all(status in ("recorded", "skipped", "failed") for status, _ in rows.values()), rows
    assert rows[long_id] == ("skipped", "no_email")
    assert rows["auth0|numbername"] == ("skipped", "no_email")
    assert rows["auth0|ghost"] == ("skipped", "user_not_found")
    for user_id in ("auth0|minimal", "auth0|ipv6", "auth0|baddate", "auth0|spaces", "auth0|üñíçødé-用户"):
        assert rows[user_id][0] == "recorded", (user_id, rows[user_id])
    leads = {lead["Email"]: lead for lead in sandbox.salesforce.leads.values()}
    assert leads["rtl@example.com"]["LastName"] == "العربية" and leads["rtl@example.com"]["FirstName"] == "עברית"
    assert len(leads["spaces@example.com"]["LastName"]) == 80 and len(leads["spaces@example.com"]["FirstName"]) == 40
    assert leads["ipv6@example.com"]["FirstName"] == "👩🏽‍💻"
    assert "2001:db8::1" not in run.stdout  # IPs are masked in logs


def test_a_page_of_odd_log_ids_loses_no_login_and_checkpoints_the_last_usable_id(sandbox, tenant, cli):
    fixture = _load("odd_log_ids.json")
    page = fixture["page"]
    usable = make_log_id(datetime(2026, 12, 1, tzinfo=timezone.utc), 7)
    for event in page:
        tenant.user(event["user_id"])
        if event.get("log_id") == "LAST_USABLE":
            event["log_id"] = usable
    sandbox.auth0.add_logs([{"log_id": usable, "date": "2026-12-01T00:00:00Z", "type": "s", "user_id": "auth0|usable-id"}])
    sandbox.auth0.fail("GET", "/api/v2/logs", status=200, body=page, when=lambda r: "from" in r.query, times=1)

    run = cli("--run-once")

    assert run.code == 0, run.stdout[-3000:] + run.stderr
    db = sqlite3.connect(sandbox.workdir / "state.db")
    statuses = dict(db.execute("SELECT user_id, status FROM users").fetchall())
    checkpoint = db.execute("SELECT value FROM meta WHERE key = 'checkpoint'").fetchone()[0]
    db.close()
    assert statuses == {event["user_id"]: "recorded" for event in page}
    assert checkpoint == usable


def test_salesforce_outage_keeps_ingest_moving_and_users_pending(sandbox, tenant, cli):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    sandbox.salesforce.fail("POST", "/services/oauth2/token", status=503, body="<html>Service Unavailable</html>", times=-1)

    first = cli("--run-once")

    assert first.code == ExitCode.TEMPORARY
    checkpoint_after_outage = first.event("cycle_finished")["checkpoint"]
    assert checkpoint_after_outage is not None
    tenant.user("auth0|b")
    tenant.logins("auth0|b")
    second = cli("--run-once")
    assert second.code == ExitCode.TEMPORARY
    assert second.event("cycle_finished")["login_events"] == 1  # logs are still read during the outage
    assert second.event("cycle_finished")["checkpoint"] > checkpoint_after_outage
    sandbox.salesforce.clear_faults()
    db = sqlite3.connect(sandbox.workdir / "state.db")
    db.execute("UPDATE users SET next_attempt_at = 0")  # let the backoff pass
    db.commit()
    db.close()
    assert cli("--run-once").code == 0
    assert len(sandbox.salesforce.leads) == 2


def test_auth0_answers_that_are_not_json(sandbox, tenant, make_app):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    sandbox.auth0.fail("GET", r"/api/v2/users/.+", status=502, body="<html><h1>502 Bad Gateway</h1></html>", times=-1)
    app = make_app(work={"backoff_base_seconds": 1})
    report = app.run_cycle()
    row = app.ledger.get("auth0|a")
    assert (row.status, row.reason) == ("pending", "auth0_unavailable")
    assert report.exit_code == ExitCode.TEMPORARY


def test_salesforce_success_status_with_a_body_that_is_not_json(sandbox, tenant, make_app):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    sandbox.salesforce.fail("GET", REST + "/query/?", status=200, body="<html>maintenance</html>", times=-1)
    app = make_app()
    app.run_cycle()
    assert app.ledger.get("auth0|a").reason == "salesforce_unavailable"


def test_token_endpoints_that_hang_are_bounded_by_the_timeout(sandbox, tenant, make_app):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    sandbox.salesforce.fail("POST", "/services/oauth2/token", hang=True, times=-1)
    app = make_app(http={"timeout_seconds": 0.3})
    report = app.run_cycle()
    assert report.retrying == {"salesforce_timeout": 1}


def test_deadline_commits_and_the_next_cycle_continues(sandbox, tenant, make_app):
    for n in range(30):
        tenant.user(f"auth0|d{n}")
    for _ in range(12):  # 360 events: 4 pages
        tenant.logins(*[f"auth0|d{n}" for n in range(30)])

    class SteppingClock:
        """Every reading of the clock moves it 1 s: a cycle's length is a count of its steps."""

        def __init__(self) -> None:
            self.now = 1_800_000_000.0

        def __call__(self) -> float:
            self.now += 1.0
            return self.now

    app = make_app(clock=SteppingClock(), schedule={"interval_seconds": 60, "cycle_deadline_seconds": 8})
    first = app.run_cycle()
    assert first.deadline_reached and first.exit_code == ExitCode.TEMPORARY
    assert first.events_read < 360
    for _ in range(40):
        report = app.run_cycle()
        if not report.deadline_reached:
            break
    assert not report.deadline_reached and report.exit_code == ExitCode.OK
    assert len(sandbox.salesforce.leads) == 30
    assert app.ledger.counts() == {"recorded": 30}


def test_retention_gap_is_warned_once_with_the_window(sandbox, tenant, make_app):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    app = make_app()
    app.run_cycle()
    old_checkpoint = app.ledger.checkpoint
    # The poller was down for days: Auth0 dropped everything up to (and including) our checkpoint.
    sandbox.auth0.logs.clear()
    later = datetime(2026, 12, 9, tzinfo=timezone.utc)
    for seq in range(3):
        when = later + timedelta(seconds=seq)
        sandbox.auth0.add_logs([{"log_id": make_log_id(when, 10_000 + seq), "date": when.isoformat().replace("+00:00", "Z"), "type": "s", "user_id": "auth0|a"}])

    from structlog.testing import capture_logs

    with capture_logs() as captured:
        app.run_cycle()
        app.run_cycle()
    gaps = [e for e in captured if e["event"] == "log_retention_gap"]
    assert len(gaps) == 1
    assert gaps[0]["checkpoint"] == old_checkpoint
    assert gaps[0]["lost_until"].startswith("2026-12-09")


def test_quiet_tenant_is_not_a_retention_gap(sandbox, tenant, make_app):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    app = make_app()
    app.run_cycle()
    later = datetime(2026, 12, 9, tzinfo=timezone.utc)
    sandbox.auth0.add_logs([{"log_id": make_log_id(later, 20_000), "date": later.isoformat(), "type": "s", "user_id": "auth0|a"}])
    from structlog.testing import capture_logs

    with capture_logs() as captured:
        app.run_cycle()
    assert not [e for e in captured if e["event"] == "log_retention_gap"]
    assert sandbox.auth0.calls("GET", r"/api/v2/logs/\d+")  # it asked Auth0 instead of guessing


def test_api_limit_events_in_the_stream_are_warnings(sandbox, tenant, cli):
    tenant.event("api_limit", None, description="Global limit has been reached")
    run = cli("--run-once")
    warning = run.event("auth0_api_limit_event")
    assert warning["level"] == "warning" and warning["type"] == "api_limit"


def test_malformed_checkpoint_is_fatal_with_an_explanation_never_a_restart(sandbox, tenant, cli):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    assert cli("--run-once").code == 0
    sandbox.auth0.fail("GET", "/api/v2/logs", status=400, body={"statusCode": 400, "error": "Bad Request", "message": "Invalid request URI", "errorCode": "invalid_uri"}, times=-1)
    run = cli("--run-once")
    assert run.code == ExitCode.STATE
    assert "checkpoint" in run.stderr and "nothing was skipped" in run.stderr
    db = sqlite3.connect(sandbox.workdir / "state.db")
    (checkpoint,) = db.execute("SELECT value FROM meta WHERE key = 'checkpoint'").fetchone()
    assert checkpoint  # kept, not reset


def test_corrupt_state_file_exits_65_and_is_left_alone(sandbox, cli):
    state = sandbox.workdir / "state.db"
    state.write_bytes(b"garbage" * 1000)
    run = cli("--run-once")
    assert run.code == ExitCode.STATE == 65
    assert "corrupt" in run.stderr
    assert state.read_bytes() == b"garbage" * 1000
    assert sandbox.auth0.requests == [] and sandbox.salesforce.requests == []


def test_wrong_secret_is_one_clear_line_and_exit_77(sandbox, tenant, cli):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    run = cli("--run-once", env={"AUTH0_CLIENT_SECRET": "not-the-secret"})
    assert run.code == ExitCode.CREDENTIALS == 77
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "AUTH0_CLIENT_SECRET" in lines[0]


def test_missing_scope_is_named(sandbox, tenant, cli):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    sandbox.auth0.scopes = ["read:logs", "read:users"]
    run = cli("--run-once")
    assert run.code == ExitCode.CREDENTIALS
    assert "update:users_app_metadata" in run.stderr


def test_daily_limit_pauses_writes_and_exits_75(sandbox, tenant, cli):
    for n in range(3):
        tenant.user(f"auth0|l{n}")
        tenant.logins(f"auth0|l{n}")
    sandbox.salesforce.api_limit = 1  # the token is free; the lookup spends the last call
    run = cli("--run-once")
    assert run.code == ExitCode.TEMPORARY
    assert run.event("salesforce_paused")["code"] == "salesforce_daily_limit"
    summary = run.event("cycle_finished")
    assert summary["salesforce_paused"] == "salesforce_daily_limit" and summary["failed"] == {}
    db = sqlite3.connect(sandbox.workdir / "state.db")
    assert db.execute("SELECT status, attempts FROM users").fetchall() == [("pending", 0)] * 3
    waits = {round(next_at - updated) for next_at, updated in db.execute("SELECT next_attempt_at, updated_at FROM users")}
    db.close()
    assert waits == {3600}  # the allowance frees up over a rolling day: tried again in an hour


def test_the_wait_after_the_daily_limit_is_bounded_by_the_backoff_cap(sandbox, tenant, cli):
    tenant.user("auth0|capped")
    tenant.logins("auth0|capped")
    sandbox.salesforce.api_limit = 1
    config = sandbox.write_config(work={"backoff_cap_seconds": 60})
    assert cli("--run-once", config=config).code == ExitCode.TEMPORARY
    db = sqlite3.connect(sandbox.workdir / "state.db")
    (wait,) = [next_at - updated for next_at, updated in db.execute("SELECT next_attempt_at, updated_at FROM users")]
    db.close()
    assert 0 < wait <= 60


def test_logs_whose_dates_and_ids_disagree_are_not_lost_on_first_start(sandbox, tenant, cli):
    """Search sorts by date, the stream by log_id: an event with a smaller id but a later date
    (ingest lag) must not be skipped when start_from picks the first log by date."""
    tenant.user("auth0|late-date")
    tenant.user("auth0|early-date")
    base = datetime(2026, 11, 30, 23, 59, 50, tzinfo=timezone.utc)
    sandbox.auth0.add_logs(
        [
            {"log_id": make_log_id(base, 1), "date": (base + timedelta(seconds=9)).isoformat(), "type": "s", "user_id": "auth0|late-date"},
            {"log_id": make_log_id(base, 2), "date": (base + timedelta(seconds=7)).isoformat(), "type": "s", "user_id": "auth0|early-date"},
        ]
    )
    for start_from in ("oldest", "2026-11-30T23:59:57Z"):
        for leftover in sandbox.workdir.glob("state.db*"):
            leftover.unlink()
        sandbox.salesforce.leads.clear()
        config = sandbox.write_config(auth0={"start_from": start_from})
        run = cli("--run-once", config=config)
        assert run.code == 0
        assert run.event("cycle_finished")["login_events"] == 2, start_from


def test_a_salesforce_outage_is_a_warning_not_just_info(sandbox, tenant, cli):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    sandbox.salesforce.fail("POST", "/services/oauth2/token", status=503, body="Service Unavailable", times=-1)
    run = cli("--run-once")
    assert run.code == 75
    finished = run.event("cycle_finished")
    assert finished["level"] == "warning" and finished["outcome"] == "partial"


@pytest.mark.parametrize("api", ["salesforce", "auth0"])
def test_an_outage_longer_than_every_attempt_fails_nobody(sandbox, tenant, cli, api):
    # max_attempts runs out after 3 attempts; the outage lasts 5 cycles. An outage says nothing about
    # the users: the backoff grows as usual, but they stay pending (exit 75 every time, never 0), and
    # the first due cycle after it makes their leads.
    tenant.user("auth0|a")
    tenant.user("auth0|b")
    tenant.logins("auth0|a", "auth0|b")
    if api == "salesforce":
        sandbox.salesforce.fail("POST", "/services/oauth2/token", status=503, body="<html>Service Unavailable</html>", times=-1)
    else:  # the logs still answer; every profile read meets a 503
        sandbox.auth0.fail("GET", r"/api/v2/users.*", status=503, body={"statusCode": 503, "error": "Service Unavailable", "message": "down"}, times=-1)
    config = sandbox.write_config(work={"max_attempts": 3, "backoff_base_seconds": 1, "backoff_cap_seconds": 1})
    db = sqlite3.connect(sandbox.workdir / "state.db", isolation_level=None)
    for _ in range(5):
        run = cli("--run-once", config=config)
        assert run.code == ExitCode.TEMPORARY, run.stdout + run.stderr
        assert run.event("cycle_finished")["failed"] == {}
        db.execute("UPDATE users SET next_attempt_at = 0")  # the backoff has passed
    assert db.execute("SELECT status, attempts FROM users").fetchall() == [("pending", 5)] * 2  # past max_attempts, not failed
    sandbox.salesforce.clear_faults()
    sandbox.auth0.clear_faults()
    assert cli("--run-once", config=config).code == 0
    assert len(sandbox.salesforce.leads) == 2
    db.close()


def test_the_concurrent_request_limit_is_a_short_retry_not_the_daily_allowance(sandbox, tenant, cli):
    # REQUEST_LIMIT_EXCEEDED also names the limit on long-running requests at once: no pause of the
    # day's writes, just another try.
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    body = [{"message": "ConcurrentPerOrgLongTxn Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    sandbox.salesforce.fail("GET", r".*/query/?", status=403, body=body, times=1)
    run = cli("--run-once")
    assert run.code == ExitCode.TEMPORARY
    summary = run.event("cycle_finished")
    assert summary.get("salesforce_paused") is None and summary["retrying"] == {"salesforce_concurrency_limited": 1}


@pytest.mark.parametrize("api", ["auth0", "salesforce"])
def test_an_untrusted_certificate_is_one_clear_fatal_line_naming_the_host(sandbox, tenant, cli, api):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    sandbox.distrust(sandbox.auth0 if api == "auth0" else sandbox.salesforce)
    run = cli("--run-once", config=sandbox.write_config())
    assert run.code == ExitCode.CONFIG, run.stdout + run.stderr
    host = (sandbox.auth0 if api == "auth0" else sandbox.salesforce).host
    assert "certificate is not trusted" in run.stderr and host in run.stderr and "CERTIFICATE_VERIFY_FAILED" in run.stderr


def test_first_start_at_a_time_on_a_busy_tenant_finds_the_smallest_id_past_the_first_search_page(sandbox, tenant, cli):
    # 150 logins dated within 0.15 s of the start, given their ids 10 s later (ingest lag), and one
    # more dated 2 s in but given its id sooner, 3 s in: the smallest id is on the second page by date.
    base = datetime(2026, 12, 1, tzinfo=timezone.utc)
    events = []
    for i in range(150):
        tenant.user(f"auth0|busy{i:03d}")
        events.append({"log_id": make_log_id(base + timedelta(seconds=10), i + 10), "date": (base + timedelta(milliseconds=i)).isoformat(), "type": "s", "user_id": f"auth0|busy{i:03d}"})
    tenant.user("auth0|zed")
    events.append({"log_id": make_log_id(base + timedelta(seconds=3), 1), "date": (base + timedelta(seconds=2)).isoformat(), "type": "s", "user_id": "auth0|zed"})
    sandbox.auth0.add_logs(events)
    run = cli("--run-once", config=sandbox.write_config(auth0={"start_from": "2026-12-01T00:00:00Z"}))
    assert run.code == 0, run.stdout + run.stderr
    assert run.event("cycle_finished")["login_events"] == 151
    assert "zed@example.com" in {lead["Email"] for lead in sandbox.salesforce.leads.values()}


def test_calls_that_got_the_same_expired_token_fetch_one_new_token_not_one_each():
    from poller.auth0_source import _Token

    issued = iter(range(1, 100))
    token = _Token(lambda: (f"token-{next(issued)}", 86400.0), clock=lambda: 0.0)
    # Two reads run side by side with the first token; both are answered 401.
    (first, a), (_, b) = token.issue(), token.issue()
    token.invalidate(a)
    renewed, _ = token.issue()  # the first read fetches a new token...
    token.invalidate(b)  # ...and the second's 401 was for the old one: the new one stays
    assert token.issue()[0] == renewed != first
    assert token.fetched == 2
