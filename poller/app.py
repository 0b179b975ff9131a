"""Wiring: build every part once from a `Config`, and run cycles with them.

The CLI, the daemon, the demo and the benchmark all run cycles through `App`, so the code path in
the demo is the production one.
"""

from __future__ import annotations

import time
from typing import Callable

from poller.auth0_source import Auth0Source
from poller.config import Config
from poller.ledger import Ledger
from poller.logs import get_logger
from poller.mapping import LeadDefaults
from poller.pacing import Interrupt
from poller.pipeline import Cycle, CycleReport, CycleSettings
from poller.salesforce_sink import LeadWrite, SalesforceSink

log = get_logger("poller")


class App:
    def __init__(self, config: Config, *, interrupt: Interrupt | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.interrupt = interrupt or Interrupt(clock=clock)
        # The ledger first: a locked or unusable state stops us before any network call.
        self.ledger = Ledger(config.state.path, clock=clock)
        try:
            self.source = Auth0Source(config.auth0, config.http, interrupt=self.interrupt, concurrency=config.work.concurrency, clock=clock)
            self.sink = SalesforceSink(config.salesforce, config.http, interrupt=self.interrupt, clock=clock)
        except BaseException:
            self.ledger.close()
            raise
        self.settings = CycleSettings(
            login_types=frozenset(config.auth0.login_types),
            start_from=config.auth0.start_from,
            lead_defaults=LeadDefaults(company=config.salesforce.company, lead_source=config.salesforce.lead_source),
            max_attempts=config.work.max_attempts,
            backoff_base_seconds=config.work.backoff_base_seconds,
            backoff_cap_seconds=config.work.backoff_cap_seconds,
            deadline_seconds=config.schedule.deadline_seconds,
        )

    def run_cycle(self) -> CycleReport:
        cycle = Cycle(
            source=self.source,
            directory=self.source,
            sink=self.sink,
            ledger=self.ledger,
            settings=self.settings,
            interrupt=self.interrupt,
            clock=self.clock,
            make_write=lambda key, fields: LeadWrite(key=key, fields=fields),
        )
        rate_limited_before = (self.source.rate_limited, self.sink.rate_limited)
        salesforce_calls_before = sum(self.sink.calls.values())
        try:
            report = cycle.run()
        finally:
            # Kept for `status` and the metrics endpoint, also when the cycle stopped on an error.
            # The usage is only news when this cycle called Salesforce (it is stamped "seen now").
            self.ledger.note_api_usage(
                rate_limited={"auth0": self.source.rate_limited - rate_limited_before[0], "salesforce": self.sink.rate_limited - rate_limited_before[1]},
                salesforce_usage=self.sink.api_usage if sum(self.sink.calls.values()) > salesforce_calls_before else None,
            )
        log.info("cycle_finished", cycle_id=report.cycle_id, outcome=report.outcome, **report.summary())
        return report

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
