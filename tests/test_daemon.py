"""The daemon as a process: SIGTERM or SIGINT mid-cycle, the watchdog, one poller per state."""

from __future__ import annotations

import json
import os
import signal
import sqlite3

import pytest

from poller.errors import ExitCode
from tests.conftest import run_cli, start_cli


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def seed(tenant, count: int) -> list[str]:
    user_ids = [f"auth0|daemon{n:02d}" for n in range(count)]
    for user_id in user_ids:
        tenant.user(user_id)
    tenant.logins(*user_ids)
    return user_ids


STOP_SIGNALS = pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])


@STOP_SIGNALS
def test_a_stop_signal_mid_cycle_finishes_the_step_commits_and_exits_0(sandbox, tenant, stop):
    user_ids = seed(tenant, 40)
    config = sandbox.write_config(schedule={"interval_seconds": 3600}, work={"concurrency": 1})
    holder: dict[str, int] = {}
    # The signal arrives while the daemon is inside a write-back: mid-cycle, mid-batch.
    sandbox.auth0.fail("PATCH", r"/api/v2/users/.+", after=True, then=lambda: os.kill(holder["pid"], stop))
    daemon = start_cli("--config", config, env=sandbox.env())
    holder["pid"] = daemon.pid

    stdout, stderr = daemon.communicate(timeout=10)

    assert daemon.returncode == 0, stderr
    events = _events(stdout)
    assert [e["event"] for e in events if e["event"] in ("stopping", "daemon_stopped")] == ["stopping", "daemon_stopped"]
    finished = [e for e in events if e["event"] == "cycle_finished"]
    assert finished and finished[-1]["outcome"] == "interrupted"
    assert finished[-1]["written_back"] < 40  # it stopped early, not at the end
    db = sqlite3.connect(sandbox.workdir / "state.db")
    states = db.execute("SELECT status, step, lead_id IS NOT NULL FROM users").fetchall()
    db.close()
    # Consistent: every user is either recorded, or pending with its lead id kept for the write-back.
    assert all(s == ("recorded", None, 1) or s == ("pending", "write_back", 1) for s in states), states

    rerun = run_cli("--config", config, "--run-once", env=sandbox.env())
    assert rerun.code == 0
    assert len(sandbox.salesforce.leads) == 40
    assert all(sandbox.auth0.users[u]["app_metadata"]["recordedAsLead"] for u in user_ids)


def test_watchdog_exits_70_when_no_cycle_completes(sandbox, tenant):
    seed(tenant, 1)
    # Auth0 stops answering mid-request; the read timeout is long, so the cycle hangs.
    sandbox.auth0.fail("GET", "/api/v2/logs", hang=True, times=-1)
    config = sandbox.write_config(schedule={"interval_seconds": 1, "watchdog_intervals": 2}, http={"timeout_seconds": 120})
    daemon = start_cli("--config", config, env=sandbox.env())

    stdout, _ = daemon.communicate(timeout=30)

    assert daemon.returncode == ExitCode.STALLED == 70
    stalled = [e for e in _events(stdout) if e["event"] == "daemon_stalled"]
    assert len(stalled) == 1 and stalled[0]["level"] == "critical"


def test_second_poller_on_the_same_state_exits_at_once_and_the_first_is_unaffected(sandbox, tenant):
    user_ids = seed(tenant, 3)
    config = sandbox.write_config(schedule={"interval_seconds": 3600})
    daemon = start_cli("--config", config, env=sandbox.env())
    try:
        # Wait until the daemon has finished its first cycle (it holds the lock from start to exit).
        lines = []
        for line in daemon.stdout:
            lines.append(line)
            if '"cycle_finished"' in line:
                break
        second = run_cli("--config", config, "--run-once", env=sandbox.env())
        assert second.code == ExitCode.LOCKED == 73
        assert "already using the state database" in second.stderr
    finally:
        daemon.send_signal(signal.SIGTERM)
        rest, _ = daemon.communicate(timeout=10)
    assert daemon.returncode == 0
    assert len(sandbox.salesforce.leads) == 3
    assert all(sandbox.auth0.users[u]["app_metadata"]["recordedAsLead"] for u in user_ids)


@STOP_SIGNALS
def test_run_once_stops_cleanly_on_a_stop_signal(sandbox, tenant, stop):
    seed(tenant, 20)
    config = sandbox.write_config(work={"concurrency": 1})
    holder: dict[str, int] = {}
    sandbox.auth0.fail("PATCH", r"/api/v2/users/.+", after=True, then=lambda: os.kill(holder["pid"], stop))
    process = start_cli("--config", config, "--run-once", env=sandbox.env())
    holder["pid"] = process.pid

    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 0, stderr
    finished = [e for e in _events(stdout) if e["event"] == "cycle_finished"]
    assert finished[-1]["outcome"] == "interrupted" and finished[-1]["written_back"] < 20
    assert run_cli("--config", config, "--run-once", env=sandbox.env()).code == 0
    assert len(sandbox.salesforce.leads) == 20


def test_a_stop_request_before_the_cycle_begins_is_a_clean_exit_with_nothing_started(sandbox, tenant):
    # The handlers are in place from before the configuration is read (the heavy imports and the
    # state's opening come after): a SIGTERM in that window must not kill --run-once with -15.
    from poller import cli as cli_module
    from poller import config as config_module

    seed(tenant, 2)
    config = config_module.load(sandbox.write_config(), environ=sandbox.env())
    before = signal.getsignal(signal.SIGTERM)
    with cli_module._stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)  # handled here, in this process's main thread
        code = cli_module._run(config, once=True, stop=stop)
    assert code == ExitCode.OK and stop.is_set()
    assert sandbox.auth0.requests == [] and sandbox.salesforce.requests == []  # nothing was begun
    assert signal.getsignal(signal.SIGTERM) == before  # the process's own handling is back


def test_a_backfill_stopped_before_it_begins_queues_nothing_and_exits_75(sandbox, tenant):
    from poller import cli as cli_module
    from poller import config as config_module

    tenant.user("auth0|early")
    config = config_module.load(sandbox.write_config(), environ=sandbox.env())
    with cli_module._stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        code = cli_module._backfill(config, stop=stop, since=None, until=None, max_leads=None, dry_run=False)
    assert code == ExitCode.TEMPORARY
    assert sandbox.auth0.requests == [] and sandbox.salesforce.requests == []


@STOP_SIGNALS
def test_backfill_stops_cleanly_on_a_stop_signal(sandbox, tenant, stop):
    user_ids = [f"auth0|bf{n:02d}" for n in range(20)]
    for user_id in user_ids:
        tenant.user(user_id)
    config = sandbox.write_config(work={"concurrency": 1})
    holder: dict[str, int] = {}
    sandbox.auth0.fail("PATCH", r"/api/v2/users/.+", after=True, then=lambda: os.kill(holder["pid"], stop))
    process = start_cli("--config", config, "backfill", "--users", env=sandbox.env())
    holder["pid"] = process.pid

    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == ExitCode.TEMPORARY, stderr  # stopped on request, not killed: not done yet
    assert "stopping" in {e["event"] for e in _events(stdout)}
    flagged = [u for u in user_ids if sandbox.auth0.users[u].get("app_metadata", {}).get("recordedAsLead")]
    assert 0 < len(flagged) < 20  # it stopped early, and what it did is kept
    assert run_cli("--config", config, "--run-once", env=sandbox.env()).code == 0
    assert len(sandbox.salesforce.leads) == 20


def test_daemon_does_not_wait_forever_for_a_hung_call_when_stopped(sandbox, tenant):
    seed(tenant, 2)
    holder: dict[str, int] = {}
    # The write-back hangs (longer than the stop grace) and the stop request arrives meanwhile.
    sandbox.auth0.fail("PATCH", r"/api/v2/users/.+", hang=True, then=lambda: os.kill(holder["pid"], signal.SIGTERM))
    config = sandbox.write_config(schedule={"interval_seconds": 3600}, http={"timeout_seconds": 60}, work={"concurrency": 1})
    daemon = start_cli("--config", config, env=sandbox.env())
    holder["pid"] = daemon.pid

    stdout, stderr = daemon.communicate(timeout=30)

    assert daemon.returncode == 0, stderr  # not a crash from closing resources under the hung thread
    names = [e["event"] for e in _events(stdout)]
    assert "stopping_without_waiting" in names and names[-1] == "daemon_stopped"
    db = sqlite3.connect(sandbox.workdir / "state.db")
    assert {row[0] for row in db.execute("SELECT step FROM users")} == {"write_back"}  # the lead ids are kept
