"""The state database: the checkpoint in the Auth0 log stream, and one ledger row per Auth0 user.

A user row moves through these states:

    pending ──(flag already set)──────────────────────────────► recorded
       │                                                          ▲
       ├─(profile loaded, lead intent written)► step=lead_write ─┤ (lead id known)
       │                                          │               │
       │                                          ▼               │
       │                                    step=write_back ──────┘ (flag written to Auth0)
       ├─(no email, unverified, no consent)──► skipped  (re-checked on the user's next login)
       ├─(filtered by a rule)────────────────► skipped  (final, or re-checked: RECHECK_ON_LOGIN)
       └─(permanent error / max attempts)────► failed   (`lead-poller retry` makes it pending again)

`step` is the intent log that makes a crash harmless: `lead_write` is committed *before* a lead is
written to Salesforce, so a resumed user whose lead may exist is looked up before any new create;
`write_back` holds the lead id until Auth0 has the flag.

One pending page of the log stream is recorded with the new checkpoint in ONE transaction, so the
checkpoint never moves past a login that the ledger does not hold.

An exclusive lock file beside the database keeps a second poller off the same state. `StateReader`
reads the same database without that lock and without writing (`status`, `check`, the metrics
endpoint), so it works beside a running daemon. A dry run works on an in-memory copy instead
(`Ledger.scratch_copy`): no lock, and nothing it does reaches the file.

Schema versions: 1 (first release); 2 adds `totals` (running counters since the state was created, for
`status` and the metrics endpoint) and an index for failure reports; 3 adds `salesforce_describe` (the
org's Lead describe, cached for the mapping check). An older database is migrated in place, in one
transaction, when the poller opens it; a newer one is refused.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from poller.errors import StateError, StateLocked

SCHEMA_VERSION = 4

# Reasons for `skipped` that a later login should re-check: the profile may have changed since, or the
# user was only seen signing in through an application or connection the filters leave out.
RECHECK_ON_LOGIN = frozenset(
    {
        "no_email",
        "invalid_email",
        "email_unverified",
        "awaiting_consent",
        "blocked",
        "application_denied",
        "application_not_allowed",
        "connection_denied",
        "connection_not_allowed",
        # A user who signs in exists: the 404 was a passing gap in the search for a linked
        # identity's primary user, or the account was deleted and created again with the same id.
        "user_not_found",
    }
)

PENDING, RECORDED, SKIPPED, FAILED = "pending", "recorded", "skipped", "failed"
STEP_LEAD_WRITE, STEP_WRITE_BACK = "lead_write", "write_back"

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE users (
    user_id         TEXT PRIMARY KEY,
    status          TEXT NOT NULL,
    step            TEXT,
    lead_id         TEXT,
    reason          TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    first_seen_at   REAL NOT NULL,
    last_login_at   TEXT,
    last_log_id     TEXT,
    updated_at      REAL NOT NULL
);
CREATE INDEX users_due ON users (status, next_attempt_at);
CREATE TABLE cycles (
    id          INTEGER PRIMARY KEY,
    started_at  REAL NOT NULL,
    finished_at REAL,
    outcome     TEXT,
    summary     TEXT
);
"""

# Each step takes a database of version N to N + 1; a new database gets _SCHEMA and then every step.
_MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE totals (
    name  TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    value REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (name, label)
);
CREATE INDEX users_status_reason ON users (status, reason);
""",
    # The Salesforce describe of each sObject we write, cached (a daily refresh, not one per start).
    2: """
CREATE TABLE salesforce_describe (
    sobject    TEXT PRIMARY KEY,
    fetched_at REAL NOT NULL,
    body       TEXT NOT NULL
);
""",
    # The email a lead write in flight was sent with, kept only until its outcome is known: if the
    # user changes their address before an uncertain write is retried, the lead is still found.
    3: """
ALTER TABLE users ADD COLUMN intent_email TEXT;
""",
}

# Cycle summary fields that are running totals (the name in `totals` is the summary key).
_SUMMED = ("events_read", "login_events", "new_users", "users_worked", "leads_created", "leads_reused", "already_flagged", "written_back")
# Summary fields that are counts by a label: summary key -> totals name.
_SUMMED_BY_LABEL = {"skipped": "skipped", "failed": "failed", "retrying": "retrying"}


@dataclass(frozen=True)
class Login:
    """A login event reduced to what the ledger keeps (no personal data beyond the user id)."""

    user_id: str
    log_id: str
    date: str | None


@dataclass(frozen=True)
class UserRow:
    user_id: str
    status: str
    step: str | None
    lead_id: str | None
    reason: str | None
    attempts: int
    next_attempt_at: float
    updated_at: float = 0.0  # when a step last changed the row (a login alone does not)
    intent_email: str | None = None  # the address an uncertain lead write was sent with


class Ledger:
    def __init__(self, path: Path, *, clock: Callable[[], float], exclusive: bool = True) -> None:
        """`exclusive=False` is for short edits beside a running poller (`retry`): SQLite's own
        transactions keep them safe; only a poller needs the state to itself."""
        self.path = path
        self._clock = clock
        self._lock_file = self._acquire_lock(path) if exclusive else None
        try:
            self._db = self._open(path)
        except BaseException:
            self._release_lock()
            raise

    # --- opening ------------------------------------------------------------------------------

    @staticmethod
    def _acquire_lock(path: Path) -> int:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open the state database's lock file next to {path}: {exc.strerror}", code="state_unwritable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateLocked(
                f"another lead-poller is already using the state database {path}; run one poller per state "
                "(stop the other, or give this one its own [state] path)",
                code="state_locked",
            ) from None
        return fd

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            os.close(self._lock_file)
            self._lock_file = None

    @classmethod
    def _open(cls, path: Path) -> sqlite3.Connection:
        if path.is_dir():
            raise StateError(f"[state] path {path} is a folder; name the database file, e.g. {path / 'state.db'}", code="state_unwritable")
        existed = path.exists() and path.stat().st_size > 0
        try:
            db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
        except sqlite3.DatabaseError as exc:
            raise _corrupt(path, exc) from None
        _prepare(db, path, new=not existed)
        try:  # a read-only file opens fine and fails at the first write: find out now
            with _transaction(db):
                db.execute("INSERT INTO meta (key, value) VALUES ('opened_at', '') ON CONFLICT(key) DO UPDATE SET value = ''")
        except sqlite3.DatabaseError as exc:
            db.close()
            raise _corrupt(path, exc) from None
        return db

    @classmethod
    def scratch_copy(cls, path: Path, *, clock: Callable[[], float]) -> "Ledger":
        """An in-memory copy of the state at `path` (an empty state if there is none yet), for a dry run.

        Everything a cycle does to it stays in memory. No lock is taken (a running daemon may keep
        writing the file) and no file is created, not even the -wal/-shm a read-only SQLite open leaves
        behind: with no -wal beside it the file is read as immutable, otherwise through the WAL that
        the running poller keeps.
        """
        ledger = cls.__new__(cls)
        ledger.path = path
        ledger._clock = clock
        ledger._lock_file = None
        memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        memory.row_factory = sqlite3.Row
        existed = path.exists() and path.stat().st_size > 0
        if existed:
            mode = "mode=ro" if Path(str(path) + "-wal").exists() else "immutable=1"
            try:
                source = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True)
                try:
                    source.backup(memory)
                finally:
                    source.close()
            except sqlite3.DatabaseError as exc:
                raise _corrupt(path, exc) from None
        _prepare(memory, path, new=not existed)
        ledger._db = memory
        return ledger

    def close(self) -> None:
        try:
            self._db.close()
        finally:
            self._release_lock()

    @property
    def schema_version(self) -> int:
        return int(self.get_meta("schema_version") or 0)

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- meta ---------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row["value"]

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    @property
    def checkpoint(self) -> str | None:
        return self.get_meta("checkpoint")

    def set_checkpoint(self, log_id: str) -> None:
        with _transaction(self._db):
            self._set_checkpoint(log_id)

    def _set_checkpoint(self, log_id: str) -> None:
        self.set_meta("checkpoint", log_id)
        self.set_meta("checkpoint_at", repr(self._clock()))

    # --- ingest -------------------------------------------------------------------------------

    def record_page(self, logins: Iterable[Login], checkpoint: str, checkpoint_date: str | None = None, *, newest_event_at: float | None = None) -> int:
        """Record a page's login events and move the checkpoint, atomically.

        Returns how many users became pending (new users, and skipped users worth a re-check).
        Users already recorded, failed or pending are only touched to note the login.
        `newest_event_at` (the page's newest event date, UNIX seconds) is kept for the log lag.
        """
        with _transaction(self._db):
            became_pending = self._record_logins(logins)
            self._set_checkpoint(checkpoint)
            if checkpoint_date:
                self.set_meta("checkpoint_date", checkpoint_date)
            if newest_event_at is not None:
                known = _float_or_none(self.get_meta("newest_event_at"))
                if known is None or newest_event_at > known:
                    self.set_meta("newest_event_at", repr(newest_event_at))
        return became_pending

    def record_logins(self, logins: Iterable[Login]) -> int:
        """Like `record_page`, without moving the checkpoint (a backfill replays older logs)."""
        with _transaction(self._db):
            return self._record_logins(logins)

    def record_filtered(self, filtered: Iterable[tuple[Login, str]]) -> list[tuple[str, str]]:
        """Users seen only in login events the filters leave out: a `skipped` row with the reason, so
        `status` can tell. Users the ledger already holds are left as they are. Returns the (user id,
        reason) pairs that are new."""
        now = self._clock()
        added: list[tuple[str, str]] = []
        with _transaction(self._db):
            for login, reason in filtered:
                cursor = self._db.execute(
                    "INSERT INTO users (user_id, status, reason, first_seen_at, last_login_at, last_log_id, updated_at) "
                    "VALUES (?, 'skipped', ?, ?, ?, ?, ?) ON CONFLICT(user_id) DO NOTHING",
                    (login.user_id, reason, now, login.date, login.log_id, now),
                )
                if cursor.rowcount:
                    added.append((login.user_id, reason))
        return added

    def enqueue(self, user_ids: Iterable[str]) -> int:
        """Make these users pending without a login (a backfill of users): new users, and skipped users
        worth a re-check. Returns how many became pending."""
        now = self._clock()
        became_pending = 0
        recheck = tuple(RECHECK_ON_LOGIN)
        with _transaction(self._db):
            for user_id in user_ids:
                cursor = self._db.execute(
                    "INSERT INTO users (user_id, status, first_seen_at, updated_at) VALUES (?, 'pending', ?, ?) "
                    "ON CONFLICT(user_id) DO NOTHING",
                    (user_id, now, now),
                )
                if not cursor.rowcount:
                    cursor = self._db.execute(
                        f"UPDATE users SET status = 'pending', reason = NULL, attempts = 0, next_attempt_at = 0, updated_at = ? "
                        f"WHERE user_id = ? AND status = 'skipped' AND reason IN ({','.join('?' * len(recheck))})",
                        (now, user_id, *recheck),
                    )
                became_pending += cursor.rowcount
        return became_pending

    def _record_logins(self, logins: Iterable[Login]) -> int:
        """Runs inside the caller's transaction."""
        now = self._clock()
        became_pending = 0
        recheck = tuple(RECHECK_ON_LOGIN)
        for login in logins:
            cursor = self._db.execute(
                "INSERT INTO users (user_id, status, first_seen_at, last_login_at, last_log_id, updated_at) "
                "VALUES (?, 'pending', ?, ?, ?, ?) ON CONFLICT(user_id) DO NOTHING",
                (login.user_id, now, login.date, login.log_id, now),
            )
            if cursor.rowcount:
                became_pending += 1
                continue
            cursor = self._db.execute(
                f"UPDATE users SET status = 'pending', reason = NULL, attempts = 0, next_attempt_at = 0, "
                f"last_login_at = ?, last_log_id = ?, updated_at = ? "
                f"WHERE user_id = ? AND status = 'skipped' AND reason IN ({','.join('?' * len(recheck))})",
                (login.date, login.log_id, now, login.user_id, *recheck),
            )
            if cursor.rowcount:
                became_pending += 1
                continue
            self._db.execute(
                "UPDATE users SET last_login_at = ?, last_log_id = ? WHERE user_id = ?",
                (login.date, login.log_id, login.user_id),
            )
        return became_pending

    # --- the Salesforce describe cache --------------------------------------------------------

    def cached_describe(self, sobject: str) -> tuple[float, dict[str, Any]] | None:
        """(when it was fetched, the describe) of `sobject`, or None if never fetched."""
        row = self._db.execute("SELECT fetched_at, body FROM salesforce_describe WHERE sobject = ?", (sobject,)).fetchone()
        if row is None:
            return None
        try:
            body = json.loads(row["body"])
        except ValueError:
            return None
        return (row["fetched_at"], body) if isinstance(body, dict) else None

    def store_describe(self, sobject: str, describe: dict[str, Any]) -> None:
        with _transaction(self._db):
            self._db.execute(
                "INSERT INTO salesforce_describe (sobject, fetched_at, body) VALUES (?, ?, ?) "
                "ON CONFLICT(sobject) DO UPDATE SET fetched_at = excluded.fetched_at, body = excluded.body",
                (sobject, self._clock(), json.dumps(describe, separators=(",", ":"))),
            )

    # --- work ---------------------------------------------------------------------------------

    def transaction(self) -> "_transaction":
        """Several updates as one transaction, so one disk sync instead of one each (the outcomes of a
        batch, learnt together). Never hold it across a network call."""
        return _transaction(self._db)

    def due(self, limit: int) -> list[UserRow]:
        rows = self._db.execute(
            "SELECT * FROM users WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, rowid LIMIT ?",
            (self._clock(), limit),
        ).fetchall()
        return [_row(r) for r in rows]

    def get(self, user_id: str) -> UserRow | None:
        row = self._db.execute("SELECT * FROM users WHERE user_id = ?", (user_id,)).fetchone()
        return None if row is None else _row(row)

    def begin_lead_write(self, intents: Iterable[tuple[str, str]]) -> None:
        """Intent: a lead write for these (user id, email) is about to be sent (it may happen even if
        we die). The email is kept with it until the outcome is known."""
        now = self._clock()
        with _transaction(self._db):
            self._db.executemany(
                "UPDATE users SET step = 'lead_write', intent_email = COALESCE(intent_email, ?), updated_at = ? "
                "WHERE user_id = ? AND status = 'pending'",
                [(email.lower(), now, user_id) for user_id, email in intents],
            )

    def lead_known(self, user_id: str, lead_id: str) -> None:
        with _transaction(self._db):
            self._db.execute(
                "UPDATE users SET step = 'write_back', lead_id = ?, intent_email = NULL, updated_at = ? WHERE user_id = ?",
                (lead_id, self._clock(), user_id),
            )

    def mark_recorded(self, user_id: str, lead_id: str | None, reason: str | None = None) -> None:
        with _transaction(self._db):
            self._db.execute(
                "UPDATE users SET status = 'recorded', step = NULL, intent_email = NULL, lead_id = COALESCE(?, lead_id), reason = ?, "
                "next_attempt_at = 0, updated_at = ? WHERE user_id = ?",
                (lead_id, reason, self._clock(), user_id),
            )

    def mark_skipped(self, user_id: str, reason: str) -> None:
        with _transaction(self._db):
            self._db.execute(
                "UPDATE users SET status = 'skipped', step = NULL, intent_email = NULL, reason = ?, updated_at = ? WHERE user_id = ?",
                (reason, self._clock(), user_id),
            )

    def mark_failed(self, user_id: str, code: str) -> None:
        with _transaction(self._db):
            self._db.execute(
                "UPDATE users SET status = 'failed', reason = ?, attempts = attempts + 1, updated_at = ? WHERE user_id = ?",
                (code, self._clock(), user_id),
            )

    def retry_later(self, user_id: str, code: str, *, min_delay: float, base: float, cap: float, max_attempts: int, count_attempt: bool = True, can_fail: bool = True) -> str:
        """Schedule another attempt with exponential backoff and full jitter; `failed` after max_attempts.

        Returns the user's new status. With `count_attempt=False` (rate limits, a spent daily
        allowance) the user waits without using up an attempt. With `can_fail=False` (an outage)
        the backoff grows as usual, but max_attempts never makes the user `failed`.
        """
        row = self.get(user_id)
        if row is None:
            return FAILED
        attempts = row.attempts + (1 if count_attempt else 0)
        now = self._clock()
        with _transaction(self._db):
            if attempts >= max_attempts and can_fail:
                self._db.execute(
                    "UPDATE users SET status = 'failed', reason = ?, attempts = ?, updated_at = ? WHERE user_id = ?",
                    (code, attempts, now, user_id),
                )
                return FAILED
            backoff = min(cap, base * (2 ** max(attempts - 1, 0)))
            delay = max(min_delay, random.uniform(backoff / 2, backoff)) if count_attempt else min_delay
            self._db.execute(
                "UPDATE users SET reason = ?, attempts = ?, next_attempt_at = ?, updated_at = ? WHERE user_id = ?",
                (code, attempts, now + delay, now, user_id),
            )
        return PENDING

    def reset_checkpoint(self, log_id: str | None = None) -> str | None:
        """Forget the stream position (the next cycle starts from [auth0] start_from), or set it to
        `log_id`. Returns the checkpoint it replaced. Users already in the ledger are kept."""
        with _transaction(self._db):
            previous = self.get_meta("checkpoint")
            self._db.execute("DELETE FROM meta WHERE key IN ('checkpoint', 'checkpoint_at', 'checkpoint_date', 'start_from_override', 'retention_gap_warned')")
            if log_id is not None:
                self._set_checkpoint(log_id)
        return previous

    def requeue_failed(self, user_ids: Iterable[str] | None = None) -> int:
        """Make failed users pending again (all of them when `user_ids` is None). Returns the count."""
        now = self._clock()
        with _transaction(self._db):
            if user_ids is None:
                cursor = self._db.execute(
                    "UPDATE users SET status = 'pending', attempts = 0, next_attempt_at = 0, updated_at = ? WHERE status = 'failed'",
                    (now,),
                )
                return cursor.rowcount
            count = 0
            for user_id in user_ids:
                cursor = self._db.execute(
                    "UPDATE users SET status = 'pending', attempts = 0, next_attempt_at = 0, updated_at = ? "
                    "WHERE user_id = ? AND status IN ('failed', 'skipped')",
                    (now, user_id),
                )
                count += cursor.rowcount
            return count

    # --- reporting ----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        return {r["status"]: r["n"] for r in self._db.execute("SELECT status, COUNT(*) AS n FROM users GROUP BY status")}

    def reasons(self, status: str) -> dict[str, int]:
        rows = self._db.execute("SELECT reason, COUNT(*) AS n FROM users WHERE status = ? GROUP BY reason ORDER BY n DESC", (status,))
        return {r["reason"] or "unknown": r["n"] for r in rows}

    def pending_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM users WHERE status = 'pending'").fetchone()[0]

    def start_cycle(self) -> int:
        with _transaction(self._db):
            return self._db.execute("INSERT INTO cycles (started_at) VALUES (?)", (self._clock(),)).lastrowid

    def finish_cycle(self, cycle_id: int, outcome: str, summary: dict[str, Any]) -> None:
        """Store the cycle's outcome and summary, and add its counts to the running totals."""
        now = self._clock()
        with _transaction(self._db):
            self._db.execute(
                "UPDATE cycles SET finished_at = ?, outcome = ?, summary = ? WHERE id = ?",
                (now, outcome, json.dumps(summary, sort_keys=True), cycle_id),
            )
            _add_cycle_totals(self._db, outcome, summary)
            if outcome == "ok":
                self.set_meta("last_ok_cycle_at", repr(now))
            # Keep a bounded history: status needs the last cycles, not all of them.
            self._db.execute("DELETE FROM cycles WHERE id <= ?", (cycle_id - 1000,))

    def note_api_usage(self, *, rate_limited: dict[str, int], salesforce_usage: tuple[int, int] | None) -> None:
        """What the adapters saw during a cycle: 429 answers per API, and Salesforce's daily API usage
        (from `Sforce-Limit-Info`, free on every response)."""
        with _transaction(self._db):
            for api, count in rate_limited.items():
                if count:
                    _add_total(self._db, "rate_limited", api, count)
            if salesforce_usage is not None:
                used, limit = salesforce_usage
                self.set_meta("salesforce_api_usage", json.dumps({"used": used, "limit": limit, "seen_at": self._clock()}))

    def users(self) -> Iterator[UserRow]:
        for row in self._db.execute("SELECT * FROM users ORDER BY rowid"):
            yield _row(row)


def _corrupt(path: Path, exc: Exception) -> StateError:
    if isinstance(exc, sqlite3.OperationalError) and "not a database" not in str(exc):
        # Permissions, a read-only file system, a full disk: the file may be fine, we cannot write it.
        return StateError(
            f"cannot write the state database {path} ({exc}); the user running lead-poller needs write "
            "access to the file and its folder (under systemd: StateDirectory=, [state] path inside it)",
            code="state_unwritable",
        )
    return StateError(
        f"the state database {path} is not a lead-poller database or is corrupt ({exc}); "
        "move it aside to start over (earlier logins will not be replayed unless [auth0] start_from says so)",
        code="state_corrupt",
    )


def _prepare(db: sqlite3.Connection, path: Path, *, new: bool) -> None:
    """Create the schema in a new database (then every migration); check the version of an existing
    one and migrate it in place, in one transaction."""
    if new:
        try:
            with _transaction(db):
                _create_schema(db)
        except sqlite3.DatabaseError as exc:
            raise _corrupt(path, exc) from None
        return
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise _corrupt(path, exc) from None
    version = int(row["value"]) if row is not None and str(row["value"]).isdigit() else None
    if version is None:
        raise StateError(f"the state database {path} has no schema version; it was not written by lead-poller", code="state_corrupt")
    if version > SCHEMA_VERSION:
        raise StateError(
            f"the state database {path} is schema version {version}, newer than this lead-poller understands "
            f"({SCHEMA_VERSION}); upgrade lead-poller or point [state] path elsewhere",
            code="state_future",
        )
    if version < SCHEMA_VERSION:
        try:
            with _transaction(db):
                _migrate(db, version)
        except sqlite3.DatabaseError as exc:
            raise StateError(f"the state database {path} could not be upgraded from schema version {version} ({exc}); it is unchanged", code="state_corrupt") from None
    _check_shape(db, path)


def _float_or_none(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


@functools.lru_cache(maxsize=1)
def _expected_shape() -> dict[str, set[str]]:
    """Table -> columns of a database this version creates (the schema, then every migration)."""
    db = sqlite3.connect(":memory:")
    try:
        _create_schema(db)
        return _shape(db)
    finally:
        db.close()


def _create_schema(db: sqlite3.Connection) -> None:
    """This version's schema in an empty database: the first release's, then every migration (so a
    new database and an upgraded one are the same by construction)."""
    _execute_script(db, _SCHEMA)
    db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
    _migrate(db, 1)


def _shape(db: sqlite3.Connection) -> dict[str, set[str]]:
    tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    return {table: {row[1] for row in db.execute(f"PRAGMA table_info('{table}')")} for table in tables}


def _check_shape(db: sqlite3.Connection, path: Path) -> None:
    """A database that says it is this schema version must have its tables and columns: one that
    does not (edited by hand, restored in part) is refused with what is missing, not half used."""
    try:
        have = _shape(db)
    except sqlite3.DatabaseError as exc:
        raise _corrupt(path, exc) from None
    missing = [f"{table}.{column}" if column else table
               for table, columns in _expected_shape().items()
               for column in (sorted(columns - have[table]) if table in have else [""])]
    if missing:
        raise StateError(
            f"the state database {path} says schema version {SCHEMA_VERSION} but lacks {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}; move it aside to start over, or restore it whole",
            code="state_corrupt",
        )


def _execute_script(db: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits first, and these statements belong to the caller's transaction.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _migrate(db: sqlite3.Connection, version: int) -> None:
    """Bring a database from `version` to SCHEMA_VERSION, inside the caller's transaction."""
    while version < SCHEMA_VERSION:
        _execute_script(db, _MIGRATIONS[version])
        if version == 1:
            # Totals start from the cycle history that version 1 kept (its last 1,000 cycles).
            for outcome, summary in db.execute("SELECT outcome, summary FROM cycles WHERE finished_at IS NOT NULL").fetchall():
                try:
                    parsed = json.loads(summary or "{}")
                except ValueError:
                    parsed = {}  # an unreadable summary only costs its own counts
                _add_cycle_totals(db, outcome, parsed if isinstance(parsed, dict) else {})
        version += 1
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))


def _add_total(db: sqlite3.Connection, name: str, label: str, amount: float) -> None:
    db.execute(
        "INSERT INTO totals (name, label, value) VALUES (?, ?, ?) ON CONFLICT(name, label) DO UPDATE SET value = value + excluded.value",
        (name, label, amount),
    )


def _add_cycle_totals(db: sqlite3.Connection, outcome: str | None, summary: dict[str, Any]) -> None:
    _add_total(db, "cycles", outcome or "unknown", 1)
    duration = summary.get("duration_seconds")
    if isinstance(duration, (int, float)):
        _add_total(db, "cycle_seconds", "", float(duration))
    for name in _SUMMED:
        value = summary.get(name)
        if isinstance(value, (int, float)) and value:
            _add_total(db, name, "", value)
    for key, name in _SUMMED_BY_LABEL.items():
        counts = summary.get(key)
        for label, value in (counts.items() if isinstance(counts, dict) else ()):
            if isinstance(value, (int, float)) and value:
                _add_total(db, name, str(label), value)


def _row(row: sqlite3.Row) -> UserRow:
    return UserRow(
        user_id=row["user_id"],
        status=row["status"],
        step=row["step"],
        lead_id=row["lead_id"],
        reason=row["reason"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        updated_at=row["updated_at"],
        intent_email=row["intent_email"] if "intent_email" in row.keys() else None,
    )


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (the connection is in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.nested = False

    def __enter__(self) -> None:
        self.nested = self.db.in_transaction
        if not self.nested:
            self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self.nested:
            return
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")


class StateReader:
    """Reads a state database without taking its lock and without writing anything.

    `status`, `check` and the metrics endpoint use it beside a running daemon. SQLite's read-only mode
    creates the WAL's side files when they are missing, and a file created by `sudo lead-poller
    status` would then belong to root and lock the service's own user out; so when no WAL file
    exists (no writer has the database open), the file is opened as immutable instead.
    """

    def __init__(self, db: sqlite3.Connection, path: Path, schema_version: int) -> None:
        self._db = db
        self.path = path
        self.schema_version = schema_version

    @classmethod
    def open(cls, path: Path) -> "StateReader | None":
        """None when there is no state database yet. StateError when it cannot be read."""
        if not path.exists() or path.stat().st_size == 0:
            return None
        uri = Path(path).resolve().as_uri() + ("?mode=ro" if Path(str(path) + "-wal").exists() else "?immutable=1")
        try:
            db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout=5000")
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc):
                raise _corrupt(path, exc) from None  # worded as the poller words it
            raise StateError(f"the state database {path} cannot be read: {exc}", code="state_corrupt") from None
        version = int(row["value"]) if row is not None and str(row["value"]).isdigit() else None
        if version is None:
            db.close()
            raise StateError(f"the state database {path} has no schema version; it was not written by lead-poller", code="state_corrupt")
        if version > SCHEMA_VERSION:
            db.close()
            raise StateError(
                f"the state database {path} is schema version {version}, newer than this lead-poller understands ({SCHEMA_VERSION})",
                code="state_future",
            )
        if version == SCHEMA_VERSION:
            try:
                _check_shape(db, path)
            except StateError:
                db.close()
                raise
        return cls(db, path, version)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "StateReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def meta(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self._db.execute("SELECT key, value FROM meta")}

    def counts(self) -> dict[str, int]:
        found = {status: 0 for status in (PENDING, RECORDED, SKIPPED, FAILED)}
        for r in self._db.execute("SELECT status, COUNT(*) AS n FROM users GROUP BY status"):
            found[r["status"]] = r["n"]
        return found

    def reasons(self, status: str, *, limit: int, examples: int) -> list[dict[str, Any]]:
        """The commonest reasons (failure codes, skip reasons) of a status, with example user ids."""
        rows = self._db.execute(
            "SELECT COALESCE(reason, 'unknown') AS reason, COUNT(*) AS n FROM users WHERE status = ? GROUP BY reason ORDER BY n DESC, reason LIMIT ?",
            (status, limit),
        ).fetchall()
        found = []
        for r in rows:
            ids = self._db.execute(
                "SELECT user_id FROM users WHERE status = ? AND COALESCE(reason, 'unknown') = ? ORDER BY updated_at DESC LIMIT ?",
                (status, r["reason"], examples),
            ).fetchall()
            found.append({"code": r["reason"], "users": r["n"], "example_user_ids": [i["user_id"] for i in ids]})
        return found

    def retry_queue(self, now: float, *, limit: int) -> dict[str, Any]:
        """Pending users: how many are due now, how many wait for a retry, and the next ones to come."""
        due = self._db.execute("SELECT COUNT(*) FROM users WHERE status = 'pending' AND next_attempt_at <= ?", (now,)).fetchone()[0]
        waiting = self._db.execute("SELECT COUNT(*) FROM users WHERE status = 'pending' AND next_attempt_at > ?", (now,)).fetchone()[0]
        in_flight = self._db.execute("SELECT COUNT(*) FROM users WHERE status = 'pending' AND step IS NOT NULL").fetchone()[0]
        rows = self._db.execute(
            "SELECT user_id, reason, attempts, next_attempt_at FROM users WHERE status = 'pending' AND next_attempt_at > ? ORDER BY next_attempt_at, rowid LIMIT ?",
            (now, limit),
        ).fetchall()
        upcoming = [{"user_id": r["user_id"], "code": r["reason"], "attempts": r["attempts"], "next_attempt_at": r["next_attempt_at"]} for r in rows]
        return {"due_now": due, "waiting": waiting, "in_flight": in_flight, "next": upcoming}

    def cycles(self) -> dict[str, dict[str, Any] | None]:
        """The last finished cycle, and the one running (or cut short by a crash) if newer."""
        finished = self._db.execute("SELECT * FROM cycles WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1").fetchone()
        newest = self._db.execute("SELECT * FROM cycles ORDER BY id DESC LIMIT 1").fetchone()
        unfinished = newest if newest is not None and newest["finished_at"] is None else None
        return {"last": None if finished is None else dict(finished), "unfinished": None if unfinished is None else dict(unfinished)}

    def totals(self) -> dict[tuple[str, str], float]:
        if self.schema_version < 2:
            return {}  # a version 1 database (an older poller still runs on it) has no totals yet
        return {(r["name"], r["label"]): r["value"] for r in self._db.execute("SELECT name, label, value FROM totals")}
