"""Wiring: build every part once from a `Config`, and run cycles with them.

The CLI, the daemon, the demo and the benchmark all run cycles through `App`, so the code path in
the demo is the production one. A dry run (`dry_run=True`) is the same wiring with the state copied
into memory and the two writes recorded instead of sent (see `dry_run.py`).

Before any user is worked, the lead mapping is checked against the org's Lead describe: cached in
the state database, fetched when missing or a day old (and again when the cached one disagrees with
the mapping: the org may have gained the field since). A mapping that does not fit stops the run with
exit 78 before any lead is written; a describe that cannot be read (and none cached) holds every lead
write of the cycle, and those users wait with the error as their reason.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from datetime import datetime
from typing import Any, Callable, Iterable, TextIO

from poller.auth0_source import Auth0Source
from poller.config import Config
from poller.dry_run import DryRunDirectory, DryRunSink, decisions, print_decisions
from poller.errors import ConfigError, FatalError, Interrupted, LeadMappingError, Problem, RetriableError
from poller.ledger import Ledger
from poller.logs import get_logger
from poller.mapping import COMPUTED_SOURCES, KNOWN_PROFILE_ROOTS, OrgField, check_against_describe, fits_without_describe, org_fields, parse_path
from poller.pacing import Interrupt
from poller.pipeline import Cycle, CycleReport, CycleSettings
from poller.rules import lead_rules
from poller.salesforce_sink import LeadWrite, SalesforceSink

log = get_logger("poller")

DESCRIBE_MAX_AGE_SECONDS = 24 * 3600.0


class App:
    def __init__(
        self,
        config: Config,
        *,
        interrupt: Interrupt | None = None,
        clock: Callable[[], float] = time.time,
        dry_run: bool = False,
        out: TextIO | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.interrupt = interrupt or Interrupt(clock=clock)
        self.dry_run = dry_run
        self.out = out or sys.stdout
        # The ledger first: a locked or unusable state stops us before any network call.
        self.ledger = Ledger.scratch_copy(config.state.path, clock=clock) if dry_run else Ledger(config.state.path, clock=clock)
        try:
            self.source = Auth0Source(config.auth0, config.http, interrupt=self.interrupt, concurrency=config.work.concurrency, clock=clock)
            self.sink = SalesforceSink(config.salesforce, config.http, interrupt=self.interrupt, clock=clock)
        except BaseException:
            self.ledger.close()
            raise
        self.directory: Any = self.source
        self.lead_sink: Any = self.sink
        if dry_run:
            self.directory = DryRunDirectory(self.source)
            self.lead_sink = DryRunSink(self.sink, external_id_field=config.salesforce.external_id_field)
        self.rules = lead_rules(config)
        self.settings = CycleSettings(
            login_types=frozenset(config.auth0.login_types),
            start_from=config.auth0.start_from,
            rules=self.rules,
            max_attempts=config.work.max_attempts,
            backoff_base_seconds=config.work.backoff_base_seconds,
            backoff_cap_seconds=config.work.backoff_cap_seconds,
            deadline_seconds=config.schedule.deadline_seconds,
            batch_profile_reads=config.work.batch_profile_reads,
        )
        self._org: tuple[float, dict[str, OrgField]] | None = None
        self._describe_missing_said = False
        for rule in self.rules.mapping.fields:
            for source in rule.sources:
                if source not in COMPUTED_SOURCES and parse_path(source)[0] not in KNOWN_PROFILE_ROOTS:
                    # Legal (identity providers add their own attributes), but often a fixed value
                    # written without { value = ... }: say so once, at start.
                    log.warning("lead_field_unusual_path", key=rule.where, path=source, hint="not a normalized Auth0 profile attribute; a fixed value is written { value = \"...\" }")

    # --- the org's Lead fields ------------------------------------------------------------------

    def lead_fields(self) -> dict[str, OrgField]:
        """The org's Lead fields, checked against the mapping. Raises the RetriableError when
        Salesforce cannot describe Lead now and no describe is cached (no lead can be written safely),
        LeadMappingError when the mapping does not fit."""
        cached = self.ledger.cached_describe("Lead")
        if cached is not None and self.clock() - cached[0] < DESCRIBE_MAX_AGE_SECONDS:
            if self._org is not None and self._org[0] == cached[0]:
                return self._org[1]  # checked already
            if not self._problems(cached[1]):
                self._org = (cached[0], org_fields(cached[1]))
                return self._org[1]
        try:
            describe = self.lead_sink.describe_lead()
        except FatalError as exc:
            # No describe at all (404): standard fields carry on; a mapping that needs it stops (78).
            if exc.code == "salesforce_describe_missing" and fits_without_describe(self.rules.mapping, self.config.salesforce.external_id_field):
                return self._without_describe(exc)
            raise
        except RetriableError as exc:
            if cached is None:
                log.warning("salesforce_describe_unavailable", code=exc.code, error=str(exc), note="no lead is written until the Lead describe can be read")
                raise
            log.warning("salesforce_describe_stale", code=exc.code, error=str(exc), age_seconds=round(self.clock() - cached[0]))
            describe = cached[1]
        else:
            self.ledger.store_describe("Lead", describe)
        problems = self._problems(describe)
        if problems:
            raise LeadMappingError(problems, org=self.config.salesforce.domain)
        cached = self.ledger.cached_describe("Lead")
        self._org = (cached[0] if cached else self.clock(), org_fields(describe))
        return self._org[1]

    def _without_describe(self, exc: FatalError) -> dict[str, OrgField]:
        """No describe at all (404, not an outage): the standard lengths stand in for the org's,
        and Salesforce's own answer to each create says the rest (a field or value it refuses
        fails that user with its code). Asked again next cycle, said once per process."""
        if not self._describe_missing_said:
            self._describe_missing_said = True
            log.warning("salesforce_describe_missing", error=str(exc), note="using the standard Lead fields and lengths; `lead-poller check` cannot verify the mapping")
        return {}

    def _problems(self, describe: dict[str, Any]) -> list[Problem]:
        return check_against_describe(self.rules.mapping, describe, external_id_field=self.config.salesforce.external_id_field)

    # --- runs -----------------------------------------------------------------------------------

    def _cycle(self, settings: CycleSettings, leads_held_by: RetriableError | None = None) -> Cycle:
        return Cycle(
            source=self.source,
            directory=self.directory,
            sink=self.lead_sink,
            ledger=self.ledger,
            settings=settings,
            interrupt=self.interrupt,
            clock=self.clock,
            make_write=lambda key, fields: LeadWrite(key=key, fields=fields),
            leads_held_by=leads_held_by,
        )

    def run_cycle(self) -> CycleReport:
        before = self._snapshot()

        def run() -> CycleReport:
            fields: dict[str, OrgField] | None = None
            held: RetriableError | None = None
            try:
                fields = self.lead_fields()
            except RetriableError as exc:
                held = exc  # the logs are still read; users who would get a lead wait, with this reason
            return self._cycle(dataclasses.replace(self.settings, org_fields=fields), held).run()

        report = self._noting_api_usage(run)
        # Quiet when healthy, loud when not: a cycle that left users waiting on an outage, a
        # limit or its deadline says so at warning level, long before anyone reaches max_attempts.
        emit = log.info if report.outcome in ("ok", "interrupted") else log.warning
        emit("cycle_finished", cycle_id=report.cycle_id, outcome=report.outcome, dry_run=self.dry_run, **report.summary())
        self._print_decisions(before)
        return report

    def backfill_logs(self, since: datetime, until: datetime | None = None, *, max_leads: int | None = None) -> CycleReport:
        """Replay the retained logs of [since, until) into the ledger (the checkpoint stays), then work."""
        return self._backfill("logs", max_leads, replay=self.source.logs_between(since, until))

    def backfill_users(self, *, max_leads: int | None = None) -> CycleReport:
        """Enqueue every user not yet flagged (user search), then work them."""
        if self.rules.applications:
            key = "lead.allow_applications" if self.rules.applications.allow else "lead.deny_applications"
            raise ConfigError(
                [Problem(key, None, "backfill --users cannot tell which application a user signs in to; replay their logins with backfill --since instead")]
            )
        return self._backfill("users", max_leads, enqueue=self.source.unflagged_users())

    def _backfill(self, kind: str, max_leads: int | None, **taken_in: Iterable[Any]) -> CycleReport:
        before = self._snapshot()

        def run() -> CycleReport:
            try:
                fields = self.lead_fields()
            except Interrupted:
                raise
            except RetriableError as exc:
                raise RetriableError(f"no lead can be written before the org's Lead describe is read ({exc}); run the backfill again later", code=exc.code) from None
            # A backfill runs to the end (or to --max-leads); the cycle deadline is the daemon's.
            settings = dataclasses.replace(self.settings, org_fields=fields, max_leads=max_leads, deadline_seconds=None)
            return self._cycle(settings).run(ingest=False, **taken_in)

        report = self._noting_api_usage(run)
        log.info("backfill_finished", backfill=kind, cycle_id=report.cycle_id, outcome=report.outcome, dry_run=self.dry_run, max_leads=max_leads, **report.summary())
        self._print_decisions(before)
        return report

    def _noting_api_usage(self, run: Callable[[], CycleReport]) -> CycleReport:
        rate_limited_before = (self.source.rate_limited, self.sink.rate_limited)
        salesforce_calls_before = sum(self.sink.calls.values())
        try:
            return run()
        finally:
            # Kept for `status` and the metrics endpoint, also when the cycle stopped on an error.
            # The usage is only news when this cycle called Salesforce (it is stamped "seen now").
            self.ledger.note_api_usage(
                rate_limited={"auth0": self.source.rate_limited - rate_limited_before[0], "salesforce": self.sink.rate_limited - rate_limited_before[1]},
                salesforce_usage=self.sink.api_usage if sum(self.sink.calls.values()) > salesforce_calls_before else None,
            )

    def _snapshot(self) -> dict[str, Any]:
        return {row.user_id: row for row in self.ledger.users()} if self.dry_run else {}

    def _print_decisions(self, before: dict[str, Any]) -> None:
        if self.dry_run:
            print_decisions(decisions(before, self.ledger.users(), self.lead_sink, self.directory), self.out)

    def close(self) -> None:
        try:
            self.source.close()
            self.sink.close()
        finally:
            self.ledger.close()

    def __enter__(self) -> "App":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
