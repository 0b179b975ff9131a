"""Ledger transitions, atomic pages, schema versioning, corrupt and locked state (no HTTP)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from poller.errors import StateError, StateLocked
from poller.ledger import Ledger, Login, StateReader


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
    ledger.begin_lead_write([("auth0|a", "A@example.com")])
    assert ledger.get("auth0|a").intent_email == "a@example.com"
    assert ledger.get("auth0|a").step == "lead_write"
    ledger.lead_known("auth0|a", "00Q1")
    row = ledger.get("auth0|a")
    assert (row.status, row.step, row.lead_id, row.intent_email) == ("pending", "write_back", "00Q1", None)
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


def test_an_outage_backs_off_but_never_fails_the_user(ledger, clock):
    ledger.record_page([login("auth0|a")], "1")
    for _ in range(12):
        status = ledger.retry_later("auth0|a", "salesforce_unavailable", min_delay=1, base=60, cap=3600, max_attempts=3, can_fail=False)
        assert status == "pending"
    row = ledger.get("auth0|a")
    assert row.attempts == 12 and 1800 <= row.next_attempt_at - clock.now <= 3600  # the capped backoff


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


# --- schema v2, backfill and dry-run support ----------------------------------------------------

from poller.ledger import SCHEMA_VERSION  # noqa: E402

V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE users (
    user_id TEXT PRIMARY KEY, status TEXT NOT NULL, step TEXT, lead_id TEXT, reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL DEFAULT 0, first_seen_at REAL NOT NULL,
    last_login_at TEXT, last_log_id TEXT, updated_at REAL NOT NULL
);
CREATE INDEX users_due ON users (status, next_attempt_at);
CREATE TABLE cycles (id INTEGER PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL, outcome TEXT, summary TEXT);
INSERT INTO meta VALUES ('schema_version', '1'), ('checkpoint', '777');
INSERT INTO users (user_id, status, lead_id, first_seen_at, updated_at) VALUES ('auth0|old', 'recorded', '00Q1', 1, 1);
"""


def test_a_version_1_state_is_migrated_in_place_and_keeps_everything(tmp_path, clock):
    path = tmp_path / "s.db"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    db.close()

    with Ledger(path, clock=clock) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION == 4
        assert ledger.checkpoint == "777"
        assert ledger.get("auth0|old").lead_id == "00Q1"
        assert ledger.cached_describe("Lead") is None
        ledger.store_describe("Lead", {"fields": [{"name": "LastName"}]})
    with Ledger(path, clock=clock) as ledger:  # reopening does not migrate again
        assert ledger.cached_describe("Lead") == (clock.now, {"fields": [{"name": "LastName"}]})


def test_a_new_state_gets_the_same_schema_as_a_migrated_one(tmp_path, clock):
    old = tmp_path / "old.db"
    db = sqlite3.connect(old)
    db.executescript(V1_SCHEMA)
    db.close()
    Ledger(old, clock=clock).close()
    Ledger(tmp_path / "new.db", clock=clock).close()

    def schema(path):
        db = sqlite3.connect(path)
        try:
            names = sorted(db.execute("SELECT type, name, tbl_name FROM sqlite_master"))
            return names, {n: db.execute(f"PRAGMA table_info({n})").fetchall() for _, n, _ in names}
        finally:
            db.close()

    assert schema(old) == schema(tmp_path / "new.db")


def test_filtered_users_are_recorded_once_and_a_counted_login_makes_them_pending(ledger):
    filtered = [(login("auth0|ios"), "application_denied"), (login("auth0|ios", 2), "application_denied")]
    assert ledger.record_filtered(filtered) == [("auth0|ios", "application_denied")]
    assert ledger.record_filtered(filtered) == []
    row = ledger.get("auth0|ios")
    assert (row.status, row.reason) == ("skipped", "application_denied")
    assert ledger.record_page([login("auth0|ios", 3)], "3") == 1
    assert ledger.get("auth0|ios").status == "pending"


def test_backfill_logins_and_enqueued_users_leave_the_checkpoint_alone(ledger):
    ledger.record_page([login("auth0|a")], "100")
    ledger.mark_recorded("auth0|a", "00Q1")
    ledger.record_page([login("auth0|consent")], "101")
    ledger.mark_skipped("auth0|consent", "awaiting_consent")
    ledger.record_page([login("auth0|staff")], "102")
    ledger.mark_skipped("auth0|staff", "email_domain_denied")

    assert ledger.record_logins([login("auth0|b", 5)]) == 1
    assert ledger.enqueue(["auth0|a", "auth0|consent", "auth0|staff", "auth0|c"]) == 2
    assert ledger.checkpoint == "102"
    assert {r.user_id for r in ledger.due(10)} == {"auth0|b", "auth0|consent", "auth0|c"}


def test_a_scratch_copy_works_in_memory_and_leaves_the_file_and_its_folder_alone(tmp_path, clock):
    path = tmp_path / "s.db"
    with Ledger(path, clock=clock) as ledger:
        ledger.record_page([login("auth0|a")], "1")
    before = path.read_bytes()
    files = sorted(p.name for p in tmp_path.iterdir())

    copy = Ledger.scratch_copy(path, clock=clock)
    copy.record_page([login("auth0|b")], "2")
    copy.mark_skipped("auth0|a", "no_email")
    assert copy.checkpoint == "2" and copy.get("auth0|a").status == "skipped"
    copy.close()

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    with Ledger(path, clock=clock) as ledger:
        assert ledger.checkpoint == "1" and ledger.get("auth0|b") is None


def test_a_scratch_copy_reads_a_state_a_running_poller_holds(tmp_path, clock):
    path = tmp_path / "s.db"
    with Ledger(path, clock=clock) as running:  # holds the lock, and its latest page is in the WAL
        running.record_page([login("auth0|a")], "9")
        copy = Ledger.scratch_copy(path, clock=clock)
        assert copy.checkpoint == "9" and copy.get("auth0|a").status == "pending"
        copy.close()


def test_a_scratch_copy_of_a_missing_state_creates_nothing(tmp_path, clock):
    copy = Ledger.scratch_copy(tmp_path / "state" / "s.db", clock=clock)
    assert copy.checkpoint is None and copy.schema_version == SCHEMA_VERSION
    copy.close()
    assert list(tmp_path.iterdir()) == []


# --- schema 2: running totals, and reading without the lock ------------------------------------


def make_version_1(path, summary: dict) -> None:
    """A state database exactly as schema version 1 wrote it."""
    from poller.ledger import _SCHEMA

    db = sqlite3.connect(path)
    db.executescript(_SCHEMA)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1'), ('checkpoint', '0007')")
    db.execute("INSERT INTO users (user_id, status, reason, first_seen_at, updated_at) VALUES ('auth0|old', 'failed', 'INVALID_FIELD', 1, 1)")
    db.execute("INSERT INTO cycles (started_at, finished_at, outcome, summary) VALUES (1, 2, 'ok', ?)", (json.dumps(summary),))
    db.execute("INSERT INTO cycles (started_at, finished_at, outcome, summary) VALUES (3, 4, 'partial', 'not json')")
    db.commit()
    db.close()


def test_a_version_1_database_is_migrated_with_totals_from_its_cycle_history(tmp_path, clock):
    from poller.ledger import SCHEMA_VERSION, StateReader

    path = tmp_path / "state.db"
    make_version_1(path, {"events_read": 12, "leads_created": 3, "skipped": {"no_email": 2}, "duration_seconds": 1.5})
    with StateReader.open(path) as reader:  # an older poller may still run on it: readable as it is
        assert (reader.schema_version, reader.totals()) == (1, {})

    with Ledger(path, clock=clock) as ledger:
        assert ledger.get_meta("schema_version") == str(SCHEMA_VERSION) == "4"
        assert ledger.checkpoint == "0007" and ledger.get("auth0|old").status == "failed"

    with StateReader.open(path) as reader:
        totals = reader.totals()
    assert totals[("events_read", "")] == 12 and totals[("leads_created", "")] == 3
    assert totals[("skipped", "no_email")] == 2 and totals[("cycle_seconds", "")] == 1.5
    assert totals[("cycles", "ok")] == 1 and totals[("cycles", "partial")] == 1  # an unreadable summary costs only its counts


def test_finished_cycles_add_up_into_totals_and_api_usage_is_kept(ledger, clock, tmp_path):
    from poller.ledger import StateReader

    for outcome in ("ok", "partial"):
        cycle = ledger.start_cycle()
        clock.now += 2
        ledger.finish_cycle(cycle, outcome, {"login_events": 5, "failed": {"INVALID_FIELD": 1}, "retrying": {}, "duration_seconds": 2.0})
    ledger.note_api_usage(rate_limited={"auth0": 3, "salesforce": 0}, salesforce_usage=(120, 15000))

    with StateReader.open(tmp_path / "state.db") as reader:
        totals, meta = reader.totals(), reader.meta()
    assert totals[("login_events", "")] == 10 and totals[("failed", "INVALID_FIELD")] == 2
    assert totals[("cycles", "ok")] == 1 and totals[("cycles", "partial")] == 1 and totals[("cycle_seconds", "")] == 4.0
    assert totals[("rate_limited", "auth0")] == 3 and ("rate_limited", "salesforce") not in totals
    assert json.loads(meta["salesforce_api_usage"]) == {"used": 120, "limit": 15000, "seen_at": clock.now}
    assert float(meta["last_ok_cycle_at"]) == clock.now - 2


def test_the_newest_event_date_only_moves_forward(ledger):
    ledger.record_page([login("auth0|a")], "1", newest_event_at=200.0)
    ledger.record_page([login("auth0|b", 2)], "2", newest_event_at=150.0)  # dates can arrive out of order
    assert ledger.get_meta("newest_event_at") == "200.0"


def test_reading_the_state_takes_no_lock_and_creates_no_file(tmp_path, clock):
    from poller.ledger import StateReader

    path = tmp_path / "state.db"
    assert StateReader.open(path) is None and not path.exists()
    with Ledger(path, clock=clock) as ledger:
        ledger.record_page([login("auth0|a")], "1")
        with StateReader.open(path) as reader:  # beside the running poller
            assert reader.counts()["pending"] == 1 and reader.meta()["checkpoint"] == "1"
    before = sorted(p.name for p in tmp_path.iterdir())
    with StateReader.open(path) as reader:
        assert reader.counts()["pending"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no -wal/-shm left behind owned by the reader


def test_reading_a_corrupt_or_newer_state_says_so(tmp_path):
    from poller.ledger import StateReader

    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError):
        StateReader.open(path)


def test_unwritable_state_is_told_apart_from_a_corrupt_one():
    from poller.ledger import _corrupt

    unwritable = _corrupt(Path("/var/lib/lead-poller/state.db"), sqlite3.OperationalError("attempt to write a readonly database"))
    assert unwritable.code == "state_unwritable" and "write access" in str(unwritable)
    corrupt = _corrupt(Path("/x.db"), sqlite3.DatabaseError("file is not a database"))
    assert corrupt.code == "state_corrupt"


def test_state_under_a_file_cannot_be_created_and_says_why(tmp_path, clock):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(StateError) as caught:
        Ledger(blocker / "state.db", clock=clock)
    assert caught.value.code == "state_unwritable"


def test_state_path_that_is_a_folder_says_so(tmp_path, clock):
    with pytest.raises(StateError, match="is a folder"):
        Ledger(tmp_path, clock=clock)


def test_several_outcomes_in_one_transaction_commit_or_roll_back_together(ledger):
    ledger.record_page([login("auth0|a"), login("auth0|b")], "0002")
    with pytest.raises(RuntimeError):
        with ledger.transaction():
            ledger.mark_recorded("auth0|a", "00Q000000000001")
            raise RuntimeError("a bug halfway through the batch")
    assert ledger.get("auth0|a").status == "pending"
    with ledger.transaction():
        ledger.mark_recorded("auth0|a", "00Q000000000001")
        ledger.mark_skipped("auth0|b", "no_email")
    assert (ledger.get("auth0|a").status, ledger.get("auth0|b").status) == ("recorded", "skipped")


@pytest.mark.parametrize("damage", ["DROP TABLE totals", "ALTER TABLE users DROP COLUMN intent_email"])
def test_a_database_missing_part_of_its_schema_is_refused_with_what_is_missing(tmp_path, damage):
    path = tmp_path / "state.db"
    with Ledger(path, clock=lambda: 1000.0):
        pass
    db = sqlite3.connect(path)
    db.execute(damage)
    db.commit()
    db.close()
    for opener in (lambda: Ledger(path, clock=lambda: 1000.0), lambda: StateReader.open(path)):
        with pytest.raises(StateError) as caught:
            opener()
        assert caught.value.exit_code == 65 and ("totals" in str(caught.value) or "users.intent_email" in str(caught.value))


def test_an_unreadable_newest_event_time_is_replaced_not_a_crash(ledger):
    ledger.set_meta("newest_event_at", "not a number")
    ledger.record_page([login("auth0|a")], "1", newest_event_at=1234.5)
    assert ledger.get_meta("newest_event_at") == "1234.5"
