"""One cycle: ingest the log stream into the ledger, then work the pending users.

The order of operations lives here and nowhere else. This module imports no vendor SDK: it talks to
the outside world through the three small protocols below, and to the state through the ledger.

Ingest never waits for Salesforce: a Salesforce outage only leaves users pending, while the log
stream is still read (Auth0 keeps logs for as little as one day).

Three things run side by side, because each spends a rate-limit bucket of its own: log pages are
read ahead on a thread (`LogFeed`), profiles are read on this one, and write-backs are sent on a lane
of their own while the next users are read. Only this thread touches the ledger.

Ingest applies the event rules (`LeadRules.event_reason`: applications, connections): a login from an
application the rules leave out is not a login for us; a user seen only in such logins gets a skipped
row with the reason.

Work, per batch of up to 200 due users:
  1. read the profiles: with `batch_profile_reads`, one user search per 100 users settles those the
     index shows as already flagged (the index may lag, so it decides nothing else); everyone else is
     read exactly, one by one (concurrently, in the adapter);
  2. decide: already flagged -> recorded; left out by a rule (`LeadRules.profile_reason`) or no usable
     email -> skipped with the reason; else a lead, mapped by `[lead.fields]`;
and once 200 users need a lead (or nobody else is due), so each Salesforce call carries a full batch:
  3. look up open leads with those emails (one query per batch) and reuse them; with
     `skip_existing_contacts`, look up contacts for the rest (one query) and skip those;
  4. record the intent, then write the rest in one sObject Collections call (at most `max_leads`
     created per run, when a backfill sets it: the rest stay pending);
  5. write the flag and lead id back to Auth0, then mark the user recorded.
Every step's result is committed before the next step starts, so a crash resumes at the right step.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from poller.errors import DailyLimitReached, ExitCode, Interrupted, PermanentError, PollerError, RetriableError
from poller.ledger import STEP_WRITE_BACK, Ledger, Login, UserRow
from poller.logs import get_logger
from poller.mapping import OrgField, build_lead, flagged_lead_id, is_flagged
from poller.pacing import Interrupt
from poller.rules import LeadRules

log = get_logger("poller.cycle")

BATCH = 200
FEED_DEPTH = 10  # log pages read ahead of the ledger at most (about 100 KB each)
MAX_QUEUED_WRITE_BACKS = 2  # write-back batches waiting on the lane; more wait on the cycle


class LogSource(Protocol):
    def find_start(self, start_from: str) -> tuple[str | None, list[dict[str, Any]]]: ...

    def read_page(self, checkpoint: str) -> tuple[list[dict[str, Any]], str | None]: ...

    def log_exists(self, log_id: str) -> bool: ...


# A quiet tenant can go hours without a log; a gap longer than this is checked against retention.
RETENTION_CHECK_AFTER = timedelta(hours=1)


class UserDirectory(Protocol):
    def search_users(self, user_ids: Iterable[str]) -> Mapping[str, dict[str, Any]]: ...

    def get_users(self, user_ids: Iterable[str]) -> Mapping[str, dict[str, Any] | Exception]: ...

    def write_backs(self, pairs: Iterable[tuple[str, str]]) -> Mapping[str, Exception | None]: ...


class LeadSink(Protocol):
    def find_leads(self, emails: Iterable[str]) -> dict[str, str]: ...

    def find_contacts(self, emails: Iterable[str]) -> dict[str, str]: ...

    def write_leads(self, leads: Sequence[Any]) -> list[Any]: ...


@dataclass(frozen=True)
class CycleSettings:
    login_types: frozenset[str]
    start_from: str
    rules: LeadRules
    max_attempts: int = 8
    backoff_base_seconds: float = 60.0
    backoff_cap_seconds: float = 6 * 3600.0
    deadline_seconds: float | None = None
    # The org's Lead fields (from its describe): types, lengths, picklist values. None: the standard
    # Lead lengths are used.
    org_fields: Mapping[str, OrgField] | None = None
    # At most this many leads created by one run (`backfill --max-leads`); the rest stay pending.
    max_leads: int | None = None
    # Settle already-flagged users through user search, 100 a call (see the module docstring).
    batch_profile_reads: bool = True


@dataclass
class CycleReport:
    cycle_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    events_read: int = 0
    login_events: int = 0
    logins_filtered: Counter = field(default_factory=Counter)
    new_users: int = 0
    users_worked: int = 0
    leads_created: int = 0
    leads_reused: int = 0
    already_flagged: int = 0
    written_back: int = 0
    skipped: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    retrying: Counter = field(default_factory=Counter)
    checkpoint: str | None = None
    ingest_error: str | None = None
    salesforce_paused: str | None = None
    interrupted: bool = False
    lead_cap_reached: bool = False
    deadline_reached: bool = False  # the cycle stopped at its deadline with work left; the next one continues
    started_at: float = 0.0
    finished_at: float = 0.0

    @property
    def temporary_problems(self) -> bool:
        return bool(self.retrying or self.ingest_error or self.salesforce_paused or self.interrupted or self.deadline_reached)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.TEMPORARY if self.temporary_problems else ExitCode.OK

    @property
    def outcome(self) -> str:
        if self.interrupted:
            return "interrupted"
        return "partial" if self.temporary_problems else "ok"

    def summary(self) -> dict[str, Any]:
        return {
            "events_read": self.events_read,
            "login_events": self.login_events,
            "logins_filtered": dict(self.logins_filtered),
            "new_users": self.new_users,
            "users_worked": self.users_worked,
            "leads_created": self.leads_created,
            "leads_reused": self.leads_reused,
            "already_flagged": self.already_flagged,
            "written_back": self.written_back,
            "skipped": dict(self.skipped),
            "failed": dict(self.failed),
            "retrying": dict(self.retrying),
            "checkpoint": self.checkpoint,
            "ingest_error": self.ingest_error,
            "salesforce_paused": self.salesforce_paused,
            "lead_cap_reached": self.lead_cap_reached,
            "deadline_reached": self.deadline_reached,
            "duration_seconds": round(self.finished_at - self.started_at, 3),
        }


def logins_in(events: Iterable[dict[str, Any]], login_types: frozenset[str]) -> list[Login]:
    """The login events of a page, reduced to what the ledger keeps. Odd events are passed over."""
    return split_logins(events, login_types, None)[0]


def split_logins(
    events: Iterable[dict[str, Any]], login_types: frozenset[str], rules: LeadRules | None
) -> tuple[list[Login], list[tuple[Login, str]]]:
    """The login events of a page: those that count, and (login, reason) for those the event rules
    leave out."""
    logins: list[Login] = []
    filtered: list[tuple[Login, str]] = []
    for event in events:
        kind, user_id = event.get("type"), event.get("user_id")
        if not isinstance(kind, str) or kind not in login_types:
            continue
        if not isinstance(user_id, str) or not user_id.strip():
            continue
        log_id = event.get("log_id")
        date = event.get("date")
        login = Login(user_id=user_id.strip(), log_id=log_id if isinstance(log_id, str) else "", date=date if isinstance(date, str) else None)
        reason = rules.event_reason(event) if rules is not None else None
        if reason:
            filtered.append((login, reason))
        else:
            logins.append(login)
    return logins, filtered


def _parse_date(value: Any) -> datetime | None:
    """An event's `date` as an aware datetime (UTC when no zone is given), or None if unusable."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def newest_event_time(events: Iterable[dict[str, Any]]) -> float | None:
    """The newest `date` of a page (UNIX seconds), for the log lag. Dates can arrive out of order,
    so this is the maximum, not the last event's; unusable dates are passed over."""
    dates = [d for d in (_parse_date(e.get("date")) for e in events) if d is not None]
    return max(dates).timestamp() if dates else None


@dataclass
class _Candidate:
    row: UserRow
    email: str
    lead: dict[str, Any]


class Cycle:
    """One ingest + work pass. Build it with everything it needs; `run()` once."""

    def __init__(
        self,
        *,
        source: LogSource,
        directory: UserDirectory,
        sink: LeadSink,
        ledger: Ledger,
        settings: CycleSettings,
        interrupt: Interrupt,
        clock: Callable[[], float] = time.time,
        make_write: Callable[[str, dict[str, Any]], Any],
        leads_held_by: RetriableError | None = None,
    ) -> None:
        self.source = source
        self.directory = directory
        self.sink = sink
        self.ledger = ledger
        self.settings = settings
        self.interrupt = interrupt
        self.clock = clock
        self.make_write = make_write
        # Why no lead may be written this cycle (the org's Lead describe could not be read, so the
        # mapping is unchecked): users who would get one wait, with this error as their reason.
        self.leads_held_by = leads_held_by
        self.report = CycleReport()
        self._gave_way = False  # a call gave way to a stop request or the deadline
        self._search_pays = True  # the last user search settled more users than it cost calls
        self._lane: ThreadPoolExecutor | None = None
        self._write_backs: deque[tuple[list[tuple[UserRow, str]], Future]] = deque()
        self.log = log.bind(cycle_id=self.report.cycle_id)

    def run(
        self,
        *,
        ingest: bool = True,
        replay: Iterable[list[dict[str, Any]]] = (),
        enqueue: Iterable[list[str]] = (),
    ) -> CycleReport:
        """One cycle: ingest, and work the due users while the log stream is still being read.

        A backfill does not read the live stream (`ingest=False`): it takes in older log pages
        (`replay`, from log search) or users found directly (`enqueue`, from user search) without
        moving the checkpoint, then works them like any other pending user."""
        report = self.report
        report.started_at = self.clock()
        if self.settings.deadline_seconds:
            self.interrupt.deadline = report.started_at + self.settings.deadline_seconds
        row_id = self.ledger.start_cycle()
        outcome = "fatal"
        try:
            self.backfill(replay, enqueue)
            feed = self._open_feed() if ingest else None
            try:
                self.work(feed)
            except BaseException:
                if feed is not None:
                    feed.close()
                    self._take_pages(feed, wait=False, raise_errors=False)
                raise
            if feed is not None:
                feed.close()
                self._take_pages(feed, wait=False)  # pages already read need not be read again
            report.interrupted = report.interrupted or self.interrupt.stopping
            outcome = report.outcome
        finally:
            report.finished_at = self.clock()
            report.checkpoint = self.ledger.checkpoint
            self.ledger.finish_cycle(row_id, outcome, report.summary())
            self.interrupt.deadline = None
        return report

    # --- ingest -------------------------------------------------------------------------------

    def _open_feed(self) -> "LogFeed | None":
        """Start reading the stream after the checkpoint (found first, on a new state). None when
        there is nothing to read from yet, or the start could not be found."""
        try:
            checkpoint = self.ledger.checkpoint
            if checkpoint is None:
                checkpoint = self._start()
                if checkpoint is None:
                    return None
        except Interrupted:
            self._note_cut_short("ingest", gave_way=True)
            return None
        except RetriableError as exc:
            self._ingest_paused(exc)
            return None
        return LogFeed(self.source, checkpoint, self.interrupt).start()

    def _take_pages(self, feed: "LogFeed", *, wait: bool, raise_errors: bool = True) -> bool:
        """Take the pages the feed has read into the ledger, in order (with `wait`, at least one
        more, unless the stream has ended). True while more may come. Without `raise_errors` (the
        cycle is already failing), an error the feed met is dropped: the cycle's own goes up."""
        for item in feed.take(wait=wait):
            if isinstance(item, _Page):
                if item.first:
                    self._check_retention_gap(item.checkpoint, item.events)
                if item.next_checkpoint is None:
                    self.report.ingest_error = "a log page had no usable log_id"
                    self.log.error("ingest_stalled", reason=self.report.ingest_error, checkpoint=item.checkpoint)
                else:
                    self._take_in(item.events, item.next_checkpoint)
            elif isinstance(item, _CutShort):
                self._note_cut_short("ingest")
            elif isinstance(item, Interrupted):
                self._note_cut_short("ingest", gave_way=True)
            elif isinstance(item, RetriableError):
                self._ingest_paused(item)
            elif isinstance(item, BaseException) and raise_errors:
                raise item
        return feed.running or feed.waiting

    def _ingest_paused(self, exc: RetriableError) -> None:
        # Logs stay in Auth0 for days: the next cycle reads from the same checkpoint.
        self.report.ingest_error = exc.code
        self.log.warning("ingest_paused", code=exc.code, error=str(exc), checkpoint=self.ledger.checkpoint)

    def backfill(self, replay: Iterable[list[dict[str, Any]]], enqueue: Iterable[list[str]]) -> None:
        report = self.report
        try:
            for events in replay:
                report.events_read += len(events)
                report.new_users += self.ledger.record_logins(self.take_logins(events))
                if self.interrupt.should_stop:
                    return
            for user_ids in enqueue:
                report.new_users += self.ledger.enqueue(user_ids)
                if self.interrupt.should_stop:
                    return
        except RetriableError as exc:
            # What was taken in stays; running the backfill again reads the rest.
            report.ingest_error = exc.code
            self.log.warning("backfill_paused", code=exc.code, error=str(exc))

    def _start(self) -> str | None:
        start_from = self.ledger.get_meta("start_from_override") or self.settings.start_from
        checkpoint, events = self.source.find_start(start_from)
        if checkpoint is None:
            # No log to start from yet (a new tenant, or nothing since start_from). Everything that
            # arrives from now on is after "now", so the next cycle starts from the oldest log.
            if start_from == "now":
                self.ledger.set_meta("start_from_override", "oldest")
            self.log.info("no_logs_yet", start_from=start_from)
            return None
        self._take_in(events, checkpoint)
        self.log.info("checkpoint_initialised", start_from=start_from, checkpoint=checkpoint)
        return checkpoint

    def _take_in(self, events: list[dict[str, Any]], checkpoint: str) -> None:
        self.report.events_read += len(events)
        for event in events:
            if event.get("type") in ("api_limit", "api_limit_warning"):
                self.log.warning("auth0_api_limit_event", type=event.get("type"), description=str(event.get("description"))[:200], date=event.get("date"))
        logins = self.take_logins(events)
        dates = [e["date"] for e in events if isinstance(e.get("date"), str)]
        self.report.new_users += self.ledger.record_page(logins, checkpoint, checkpoint_date=dates[-1] if dates else None, newest_event_at=newest_event_time(events))

    def _check_retention_gap(self, checkpoint: str, events: list[dict[str, Any]]) -> None:
        """Warn once if logs may have expired unread: the poller was down longer than Auth0 keeps
        logs, and the stream resumed at its oldest log, far after our checkpoint."""
        last_seen = _parse_date(self.ledger.get_meta("checkpoint_date"))
        resumed_at = next((d for d in (_parse_date(e.get("date")) for e in events) if d), None)
        if last_seen is None or resumed_at is None or resumed_at - last_seen < RETENTION_CHECK_AFTER:
            return
        if self.ledger.get_meta("retention_gap_warned") == checkpoint:
            return
        note = "Auth0 no longer has the checkpoint's log"
        try:
            if self.source.log_exists(checkpoint):
                return
        except Interrupted:
            raise  # a stop request says nothing about the log
        except RetriableError as exc:
            # Only the warning depends on the answer, and the pages read fine: ingest goes on, and
            # the gap is reported as possible rather than not at all.
            note = f"Auth0 did not say whether it still has the checkpoint's log ({exc.code})"
        self.ledger.set_meta("retention_gap_warned", checkpoint)
        self.log.warning(
            "log_retention_gap",
            checkpoint=checkpoint,
            lost_from=last_seen.isoformat(),
            lost_until=resumed_at.isoformat(),
            note=f"{note}: logins in this window may have expired unread; "
            "`lead-poller backfill --users` can enqueue users who never became leads",
        )

    def take_logins(self, events: list[dict[str, Any]]) -> list[Login]:
        """The page's logins that count. Users seen only in filtered logins are recorded as skipped
        with the reason first (one info line each, the first time), so that a login that counts, in
        this page or a later one, makes them pending."""
        logins, filtered = split_logins(events, self.settings.login_types, self.settings.rules)
        self.report.login_events += len(logins) + len(filtered)
        counted = {login.user_id for login in logins}
        only_filtered: dict[str, tuple[Login, str]] = {}
        for login, reason in filtered:
            self.report.logins_filtered[reason] += 1
            if login.user_id not in counted:
                only_filtered.setdefault(login.user_id, (login, reason))
        if only_filtered:
            for user_id, reason in self.ledger.record_filtered(only_filtered.values()):
                self.log.info("user_filtered", user_id=user_id, reason=reason)
        return logins

    # --- work ---------------------------------------------------------------------------------

    def work(self, feed: "LogFeed | None" = None) -> None:
        """Work due users batch by batch, taking in log pages from `feed` as they come. The deadline
        is checked between batches only, and the first batch always runs (unless a stop was
        requested): a batch that takes longer than the deadline still finishes, so no cycle ends
        without progress. Write-backs go on a lane of their own; their outcomes are recorded here."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="write-back") as lane:
            self._lane = lane
            try:
                self._work_loop(feed)
            except BaseException:
                # Stopping on an error: write-backs not sent yet stay at their step for the next
                # cycle; the batch under way finishes and is recorded.
                for _, future in self._write_backs:
                    future.cancel()
                self._record_write_backs(wait=True, raise_errors=False)
                raise
            finally:
                self._lane = None
            self._record_write_backs(wait=True)

    def _work_loop(self, feed: "LogFeed | None") -> None:
        worked: set[str] = set()
        candidates: list[_Candidate] = []  # users who need a lead, gathered until a full batch
        more_logs = feed is not None
        while not (self.interrupt.stopping or self._gave_way or (worked and self.interrupt.expired)):
            if more_logs:
                more_logs = self._take_pages(feed, wait=False)
            self._record_write_backs(wait=False)
            batch = BATCH
            if self.settings.max_leads is not None:
                room = self.settings.max_leads - self.report.leads_created - len(candidates)
                if room <= 0 and candidates:
                    self._lead_batch(candidates)
                    candidates = []
                    continue
                if room <= 0:
                    self.report.lead_cap_reached = True
                    return
                batch = min(BATCH, room)  # read no more profiles than could still become leads
            rows = self._next_rows(worked, batch)
            if len(rows) < batch and more_logs:
                more_logs = self._take_pages(feed, wait=True)  # a fuller batch, or the end of the stream
                continue
            if not rows:
                break
            worked.update(r.user_id for r in rows)
            self.report.users_worked += len(rows)
            candidates.extend(self._work_batch(rows))
            if len(candidates) >= BATCH:
                self._lead_batch(candidates[:BATCH])
                del candidates[:BATCH]
        else:
            self._note_cut_short("work")
        # Their profiles are read: unless asked to stop, their leads are part of the work under way.
        if candidates and not self.interrupt.stopping:
            self._lead_batch(candidates)

    def _next_rows(self, worked: set[str], batch: int) -> list[UserRow]:
        """Up to `batch` due users not worked yet in this cycle. Users the cycle still holds (gathered
        for a lead, or waiting for their write-back) are due too: look past them."""
        limit = 2 * batch
        while True:
            due = self.ledger.due(limit)
            rows = [r for r in due if r.user_id not in worked]
            if len(rows) >= batch or len(due) < limit:
                return rows[:batch]
            limit *= 2

    def _note_cut_short(self, stage: str, gave_way: bool = False) -> None:
        """The stage's loop ended on a stop request or the deadline, not because it was done."""
        if self.interrupt.stopping:
            self.report.interrupted = True
        elif (self.interrupt.expired or gave_way or self._gave_way) and not self.report.deadline_reached:
            self.report.deadline_reached = True
            self.log.warning("cycle_deadline_reached", stage=stage, deadline_seconds=self.settings.deadline_seconds)

    def _work_batch(self, rows: list[UserRow]) -> list[_Candidate]:
        """Read and decide; returns the users who need a lead. Users whose lead is already known
        (their write-back is what is left) are written back right away."""
        ready: list[tuple[UserRow, str]] = [(r, r.lead_id) for r in rows if r.step == STEP_WRITE_BACK and r.lead_id]
        need_profile = [r for r in rows if not (r.step == STEP_WRITE_BACK and r.lead_id)]
        candidates: list[_Candidate] = []
        profiles = self._read_profiles(need_profile)
        with self.ledger.transaction():
            for row in need_profile:
                profile = profiles.get(row.user_id)
                if isinstance(profile, Exception) or profile is None:
                    self._defer(row, profile or RetriableError("no profile", code="auth0_unexpected"))
                    continue
                try:
                    candidate = self._decide(row, profile)
                except (PollerError, sqlite3.Error):
                    raise  # ours to report as they are: fatal, a stop, a state that cannot be written
                except Exception as exc:  # a profile no rule foresaw must not hold up everyone after it
                    self.log.error("user_unexpected_error", user_id=row.user_id, error=repr(exc)[:300], exc_info=True)
                    self._defer(row, PermanentError(f"unexpected error deciding this user: {exc!r}"[:300], code="internal_error"))
                    continue
                if candidate is not None:
                    candidates.append(candidate)
        if ready:
            self._write_back(ready)
        return candidates

    def _read_profiles(self, rows: list[UserRow]) -> Mapping[str, dict[str, Any] | Exception]:
        """Every row's profile, or why it could not be read. With batched reads, the search index
        answers for the users it shows as already flagged: nothing is written for them, and a flag,
        once set, stays. Everyone else is read exactly, as without batching: the index can lag
        behind a flag, an email or a consent written seconds ago."""
        if not rows:
            return {}
        profiles: dict[str, dict[str, Any] | Exception] = {}
        if self.settings.batch_profile_reads and self._search_pays and len(rows) > 1:
            indexed = self.directory.search_users(r.user_id for r in rows)
            profiles.update((r.user_id, indexed[r.user_id]) for r in rows if r.user_id in indexed and is_flagged(indexed[r.user_id]))
            # Where few users are flagged already (a new tenant, newcomers only), the searches
            # cost more calls than they save: read one by one for the rest of the cycle.
            self._search_pays = len(profiles) > -(-len(rows) // 100)
        to_read = [r.user_id for r in rows if r.user_id not in profiles]
        if to_read:
            profiles.update(self.directory.get_users(to_read))
        return profiles

    def _lead_batch(self, candidates: list[_Candidate]) -> None:
        """Leads for up to 200 users, then their write-backs."""
        ready: list[tuple[UserRow, str]] = []
        if self.leads_held_by is not None:
            self._pause_if_limit(self.leads_held_by)
            for candidate in candidates:
                self._defer(candidate.row, self.leads_held_by)
        elif self.report.salesforce_paused:
            for candidate in candidates:
                self._defer(candidate.row, DailyLimitReached(self.report.salesforce_paused))
        else:
            ready = self._ensure_leads(candidates)
        if ready:
            self._write_back(ready)

    def _decide(self, row: UserRow, profile: dict[str, Any]) -> _Candidate | None:
        if is_flagged(profile):
            self.ledger.mark_recorded(row.user_id, flagged_lead_id(profile) or row.lead_id, reason="already_flagged")
            self.report.already_flagged += 1
            return None
        reason = self.settings.rules.profile_reason(profile)
        if reason:
            self._skip(row, reason)
            return None
        decision = build_lead(profile, self.settings.rules.mapping, self.settings.org_fields)
        if decision.lead is None:
            self._skip(row, decision.reason or "not_eligible")
            return None
        return _Candidate(row=row, email=decision.email or "", lead=decision.lead)

    def _ensure_leads(self, candidates: list[_Candidate]) -> list[tuple[UserRow, str]]:
        """Exactly one lead per person: reuse an open lead with the same email, else write one.
        Users of one batch who share an email share one lead."""
        ready: list[tuple[UserRow, str]] = []
        try:
            # A resumed user whose earlier write may have happened is also looked up by the address
            # that write was sent with, in case the profile's email changed since.
            emails = [c.email for c in candidates] + [c.row.intent_email for c in candidates if c.row.intent_email]
            existing = self.sink.find_leads(emails)
        except (RetriableError, PermanentError) as exc:
            self._pause_if_limit(exc)
            for candidate in candidates:
                self._defer(candidate.row, exc)
            return ready

        groups: dict[str, list[_Candidate]] = {}
        with self.ledger.transaction():
            for candidate in candidates:
                lead_id = existing.get(candidate.email.lower()) or existing.get(candidate.row.intent_email or "")
                if lead_id:
                    self.ledger.lead_known(candidate.row.user_id, lead_id)
                    self.report.leads_reused += 1
                    ready.append((candidate.row, lead_id))
                else:
                    groups.setdefault(candidate.email.lower(), []).append(candidate)
        if groups and self.settings.rules.skip_existing_contacts:
            try:
                contacts = self.sink.find_contacts(groups)
            except (RetriableError, PermanentError) as exc:
                self._pause_if_limit(exc)
                for group in groups.values():
                    for candidate in group:
                        self._defer(candidate.row, exc)
                return ready
            for email in [e for e in groups if e in contacts]:
                for candidate in groups.pop(email):
                    self._skip(candidate.row, "existing_contact")
        if not groups:
            return ready

        group_list = list(groups.values())
        if self.settings.max_leads is not None:
            room = max(0, self.settings.max_leads - self.report.leads_created)
            if len(group_list) > room:
                # The rest stay pending, untouched: a later run (or the daemon) creates their leads.
                group_list = group_list[:room]
                self.report.lead_cap_reached = True
            if not group_list:
                return ready
        self.ledger.begin_lead_write((c.row.user_id, c.email) for group in group_list for c in group)
        writes = [self.make_write(group[0].row.user_id, group[0].lead) for group in group_list]
        try:
            results = self.sink.write_leads(writes)
        except (RetriableError, PermanentError) as exc:
            self._pause_if_limit(exc)
            for group in group_list:
                for candidate in group:
                    self._defer(candidate.row, exc)
            return ready

        failed: list[tuple[_Candidate, Exception]] = []
        with self.ledger.transaction():  # every lead id is committed before any write-back is sent
            for group, result in zip(group_list, results):
                outcome, lead_id, error = result.outcome, result.lead_id, result.error
                if lead_id and outcome in ("created", "updated", "adopted"):
                    if outcome == "adopted":
                        self.report.leads_reused += 1
                    else:
                        self.report.leads_created += 1
                    for candidate in group:
                        self.ledger.lead_known(candidate.row.user_id, lead_id)
                        ready.append((candidate.row, lead_id))
                    self.log.debug("lead_written", user_id=group[0].row.user_id, outcome=outcome, lead_id=lead_id)
                elif outcome in ("duplicate_skipped", "existing_contact"):
                    for candidate in group:
                        self._skip(candidate.row, "duplicate" if outcome == "duplicate_skipped" else "existing_contact")
                else:
                    failed.extend((c, error or RetriableError("no result", code="salesforce_unexpected")) for c in group)
        # Outside the transaction: an error that is not a user's own ends the cycle, and must not
        # take the lead ids above with it.
        for candidate, error in failed:
            self._defer(candidate.row, error)
        return ready

    def _write_back(self, ready: list[tuple[UserRow, str]]) -> None:
        """Send these write-backs on the lane. Their lead ids are committed already, so a crash
        from here on only sends them again (a PATCH of the same values). A few batches may wait on
        the lane; past that the cycle waits, so the profile reads never run far ahead."""
        while len(self._write_backs) >= MAX_QUEUED_WRITE_BACKS:
            self._record_write_backs(wait=True, oldest_only=True)
        pairs = [(row.user_id, lead_id) for row, lead_id in ready]
        assert self._lane is not None, "write-backs are sent from work() only"
        self._write_backs.append((ready, self._lane.submit(self.directory.write_backs, pairs)))

    def _record_write_backs(self, *, wait: bool, oldest_only: bool = False, raise_errors: bool = True) -> None:
        """Record the outcomes of the write-back batches that have finished (with `wait`, of all)."""
        while self._write_backs:
            ready, future = self._write_backs[0]
            if not wait and not future.done():
                return
            self._write_backs.popleft()
            try:
                outcomes = future.result()
            except BaseException:
                if raise_errors:
                    raise
                continue  # the users stay at the write-back step: the next cycle sends it again
            with self.ledger.transaction():
                for row, lead_id in ready:
                    error = outcomes.get(row.user_id)
                    if error is None:
                        self.ledger.mark_recorded(row.user_id, lead_id)
                        self.report.written_back += 1
                    else:
                        self._defer(row, error)
            if oldest_only:
                return

    # --- outcomes -----------------------------------------------------------------------------

    def _pause_if_limit(self, exc: Exception) -> None:
        if isinstance(exc, DailyLimitReached) and not self.report.salesforce_paused:
            self.report.salesforce_paused = exc.code
            self.log.error("salesforce_paused", code=exc.code, error=str(exc))

    def _skip(self, row: UserRow, reason: str) -> None:
        self.ledger.mark_skipped(row.user_id, reason)
        self.report.skipped[reason] += 1
        self.log.info("user_skipped", user_id=row.user_id, reason=reason)

    def _defer(self, row: UserRow, error: Exception) -> None:
        """A user's step did not succeed: retry later, or fail for good."""
        if isinstance(error, PermanentError):
            if error.code == "user_not_found":
                self._skip(row, "user_not_found")
                return
            self.ledger.mark_failed(row.user_id, error.code)
            self.report.failed[error.code] += 1
            self.log.warning("user_failed", user_id=row.user_id, code=error.code, field=error.field, error=str(error))
            return
        if not isinstance(error, RetriableError):
            raise error
        if isinstance(error, Interrupted):
            # The user stays due; nothing was learnt about it. A call gave way to a stop request, or
            # to the deadline (a rate-limit wait would have passed it): no further batch this cycle,
            # else the same untouched users would fill the next batch and the cycle would look done.
            self._gave_way = True
            return
        status = self.ledger.retry_later(
            row.user_id,
            error.code,
            # The cap bounds every wait, ours (an hour after the daily limit) or a vendor's.
            min_delay=min(max(error.delay, 1.0), self.settings.backoff_cap_seconds),
            base=self.settings.backoff_base_seconds,
            cap=self.settings.backoff_cap_seconds,
            max_attempts=self.settings.max_attempts,
            count_attempt=error.counts_as_attempt,
            can_fail=error.can_fail,
        )
        if status == "failed":
            self.report.failed[error.code] += 1
            self.log.warning("user_failed", user_id=row.user_id, code=error.code, error=str(error), reason="max_attempts")
        else:
            self.report.retrying[error.code] += 1
            self.log.info("user_retry_later", user_id=row.user_id, code=error.code, error=str(error))


@dataclass
class _Page:
    events: list[dict[str, Any]]
    checkpoint: str  # the page was read after this checkpoint
    next_checkpoint: str | None
    first: bool  # the cycle's first page


class _CutShort:
    """The feed stopped at a stop request or the deadline, before the end of the stream."""


class LogFeed:
    """Reads the log stream after `checkpoint` on a thread of its own, at most FEED_DEPTH pages ahead
    of the cycle, which takes them into the ledger in order. A page read but never taken in (a
    crash, a stop) is read again by the next cycle: the checkpoint never moved past it.

    Items handed over, in stream order: `_Page`s, then possibly one `_CutShort` or one exception
    (the read's error, for the cycle to handle as it would its own)."""

    def __init__(self, source: LogSource, checkpoint: str, interrupt: Interrupt, *, depth: int = FEED_DEPTH) -> None:
        self._source = source
        self._checkpoint = checkpoint
        self._interrupt = interrupt
        self._depth = depth
        self._items: deque[Any] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self.running = False
        self._thread = threading.Thread(target=self._read, name="log-feed", daemon=True)

    def start(self) -> "LogFeed":
        self.running = True
        self._thread.start()
        return self

    @property
    def waiting(self) -> bool:
        """Items read and not taken yet."""
        with self._changed:
            return bool(self._items)

    def take(self, *, wait: bool) -> list[Any]:
        """Everything read so far; with `wait`, at least one item unless the feed has ended."""
        with self._changed:
            while wait and not self._items and self.running:
                self._changed.wait()
            items = list(self._items)
            self._items.clear()
            self._changed.notify_all()
            return items

    def close(self) -> None:
        """Read no further; returns once the call under way (if any) has ended."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()

    def _read(self) -> None:
        checkpoint, first = self._checkpoint, True
        try:
            # At least one page per cycle, whatever the deadline, so a slow cycle still moves on.
            while first or not self._interrupt.should_stop:
                if self._closed:
                    return
                events, next_checkpoint = self._source.read_page(checkpoint)
                if not events or not self._put(_Page(events, checkpoint, next_checkpoint, first)):
                    return
                if next_checkpoint is None:
                    return  # the cycle reports the stalled stream
                checkpoint, first = next_checkpoint, False
            self._put(_CutShort())
        except BaseException as exc:  # handed to the cycle's thread, which handles or raises it
            self._put(exc)
        finally:
            with self._changed:
                self.running = False
                self._changed.notify_all()

    def _put(self, item: Any) -> bool:
        with self._changed:
            while len(self._items) >= self._depth and not self._closed:
                self._changed.wait()
            if self._closed:
                return False
            self._items.append(item)
            self._changed.notify_all()
            return True
