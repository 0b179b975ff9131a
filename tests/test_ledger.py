"""Ledger transitions, atomic pages, schema versioning, corrupt and locked state (no HTTP)."""

from __future__ import annotations

import sqlite3

import pytest

from poller.errors import StateError, StateLocked
from poller.ledger import Ledger, Login


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def ledger(tmp_path, clock):
    with Ledger(tmp_path / "state.db", clock=clock) as ledger:
        yield ledger


def login(user_id: str, n: int = 1) -> Login:
    return Login(user_id=user_id, log_id=f"{n:056d}", date="2026-12-01T00:00:00.000Z")


def test_a_page_records_users_and_checkpoint_together(ledger):
    assert ledger.record_page([login("auth0|a"), login("auth0|b"), login("auth0|a", 3)], "0003") == 2
    assert ledger.checkpoint == "0003"
    assert {r.user_id for r in ledger.due(10)} == {"auth0|a", "auth0|b"}


def test_a_failed_page_moves_neither_users_nor_checkpoint(ledger):
    ledger.record_page([login("auth0|a")], "0001")

    class Boom(Login):
        @property
        def user_id(self):  # type: ignore[override]
            raise RuntimeError("disk on fire")

    with pytest.raises(Exception):
        ledger.record_page([login("auth0|b"), Boom("x", "y", None)], "0002")
    assert ledger.checkpoint == "0001"
    assert ledger.get("auth0|b") is None


def test_recorded_users_stay_recorded_on_later_logins(ledger):
    ledger.record_page([login("auth0|a")], "1")
    ledger.mark_recorded("auth0|a", "00Q000000000001AAA")
    assert ledger.record_page([login("auth0|a", 2)], "2") == 0
    row = ledger.get("auth0|a")
    assert row.status == "recorded" and row.lead_id == "00Q000000000001AAA"
    assert ledger.due(10) == []


def test_skipped_for_a_recheckable_reason_comes_back_on_next_login(ledger):
    ledger.record_page([login("auth0|noemail"), login("auth0|filtered")], "1")
    ledger.mark_skipped("auth0|noemail", "no_email")
    ledger.mark_skipped("auth0|filtered", "email_domain_denied")
    assert ledger.record_page([login("auth0|noemail", 2), login("auth0|filtered", 2)], "2") == 1
    assert [r.user_id for r in ledger.due(10)] == ["auth0|noemail"]


def test_intent_then_lead_then_recorded(ledger):
    ledger.record_page([login("auth0|a")], "1")
    ledger.begin_lead_write(["auth0|a"])
    assert ledger.get("auth0|a").step == "lead_write"
    ledger.lead_known("auth0|a", "00Q1")
    row = ledger.get("auth0|a")
    assert (row.status, row.step, row.lead_id) == ("pending", "write_back", "00Q1")
    ledger.mark_recorded("auth0|a", "00Q1")
    assert ledger.get("auth0|a").step is None


def test_backoff_grows_and_fails_after_max_attempts(ledger, clock):
    ledger.record_page([login("auth0|a")], "1")
    delays = []
    for attempt in range(1, 4):
        status = ledger.retry_later("auth0|a", "salesforce_unavailable", min_delay=1, base=60, cap=3600, max_attempts=4)
        assert status == "pending"
        row = ledger.get("auth0|a")
        delays.append(row.next_attempt_at - clock.now)
        assert row.attempts == attempt and row.reason == "salesforce_unavailable"
        assert ledger.due(10) == []  # not due before its time
        clock.now = row.next_attempt_at
        assert len(ledger.due(10)) == 1
    assert 30 <= delays[0] <= 60 and 60 <= delays[1] <= 120 and 120 <= delays[2] <= 240
    assert ledger.retry_later("auth0|a", "salesforce_unavailable", min_delay=1, base=60, cap=3600, max_attempts=4) == "failed"
    assert ledger.get("auth0|a").status == "failed"


def test_waits_that_say_nothing_about_the_user_do_not_use_attempts(ledger):
    ledger.record_page([login("auth0|a")], "1")
    for _ in range(10):
        ledger.retry_later("auth0|a", "auth0_rate_limited", min_delay=2, base=60, cap=3600, max_attempts=3, count_attempt=False)
    row = ledger.get("auth0|a")
    assert row.status == "pending" and row.attempts == 0


def test_retry_makes_failed_users_pending_again(ledger):
    ledger.record_page([login("auth0|a"), login("auth0|b")], "1")
    ledger.mark_failed("auth0|a", "INVALID_EMAIL_ADDRESS")
    ledger.mark_failed("auth0|b", "STRING_TOO_LONG")
    assert ledger.requeue_failed(["auth0|a", "auth0|unknown"]) == 1
    assert ledger.get("auth0|a").status == "pending" and ledger.get("auth0|a").attempts == 0
    assert ledger.requeue_failed(None) == 1
    assert ledger.counts() == {"pending": 2}


def test_checkpoint_survives_reopening(tmp_path, clock):
    with Ledger(tmp_path / "s.db", clock=clock) as ledger:
        ledger.record_page([login("auth0|a")], "42")
    with Ledger(tmp_path / "s.db", clock=clock) as ledger:
        assert ledger.checkpoint == "42"
        assert ledger.get("auth0|a").status == "pending"


def test_second_process_on_the_same_state_is_refused(tmp_path, clock):
    with Ledger(tmp_path / "s.db", clock=clock):
        with pytest.raises(StateLocked, match="already using"):
            Ledger(tmp_path / "s.db", clock=clock)
    Ledger(tmp_path / "s.db", clock=clock).close()  # free again once the first one closed


def test_corrupt_state_is_a_clear_error_never_a_reset(tmp_path, clock):
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not sqlite, it is a text file that someone put here" * 20)
    with pytest.raises(StateError, match="not a lead-poller database or is corrupt"):
        Ledger(path, clock=clock)
    assert path.read_bytes().startswith(b"this is not sqlite")  # untouched


def test_future_schema_version_is_refused(tmp_path, clock):
    path = tmp_path / "s.db"
    Ledger(path, clock=clock).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="newer than this lead-poller"):
        Ledger(path, clock=clock)


def test_foreign_sqlite_database_is_refused(tmp_path, clock):
    path = tmp_path / "s.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE other (x)")
    db.commit()
    db.close()
    with pytest.raises(StateError):
        Ledger(path, clock=clock)
