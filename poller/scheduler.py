"""The daemon: APScheduler 3.x runs one cycle per interval; signals and a watchdog end it cleanly.

Kept thin on purpose: every robustness guarantee (timeouts, deadline, retries) lives in the cycle.
The scheduler only decides *when*: the first cycle at start, then one per interval, never two at once
(`max_instances=1`), missed runs collapsed into one (`coalesce=True`) whatever their delay
(`misfire_grace_time=None`).

SIGTERM/SIGINT: the current user's step finishes, its result is committed, and the process exits 0.
Watchdog: if no cycle completed for `watchdog_intervals` x the interval, a CRITICAL line is logged and
the process exits 70, so systemd restarts a daemon that hangs.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.blocking import BlockingScheduler

from poller.app import App
from poller.errors import ExitCode, FatalError
from poller.logs import get_logger, report_fatal

log = get_logger("poller.daemon")

# How long a stop request waits for the step in flight (the promise: exit within 10 s).
STOP_GRACE_SECONDS = 8.0

Notify = Callable[..., None]


def _no_notify(**_: str) -> None:
    pass


class Daemon:
    def __init__(self, app: App, *, notify: Notify = _no_notify, clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.notify = notify
        self.clock = clock
        self.interval = app.config.schedule.interval_seconds
        self.stall_after = app.config.schedule.watchdog_intervals * self.interval
        self.exit_code = ExitCode.OK
        self.last_completed = clock()
        self._cycle_lock = threading.Lock()
        self.scheduler = BlockingScheduler(timezone=timezone.utc, job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None})

    # --- jobs ---------------------------------------------------------------------------------

    def _cycle(self) -> None:
        with self._cycle_lock:
            if self.app.interrupt.stopping:
                return
            try:
                report = self.app.run_cycle()
            except FatalError as exc:
                report_fatal("lead-poller", str(exc), code=exc.code, exit_code=exc.exit_code)  # once, as the CLI does
                self.exit_code = exc.exit_code
                self.notify(STATUS=f"stopped: {exc.code} (see the log)")
                self.stop()
                return
            self.last_completed = self.clock()
            summary = report.summary()
            self.notify(
                WATCHDOG="1",
                STATUS=f"last cycle {report.outcome}: {summary['leads_created']} leads created, "
                f"{summary['login_events']} logins, checkpoint {summary['checkpoint'] or 'none'}",
            )

    def _watchdog(self) -> None:
        stalled_for = self.clock() - self.last_completed
        if stalled_for > self.stall_after and not self.app.interrupt.stopping:
            log.critical("daemon_stalled", seconds_since_last_cycle=round(stalled_for), limit_seconds=self.stall_after)
            self.notify(STATUS="stalled: no cycle completed", STOPPING="1")
            sys.stdout.flush()
            sys.stderr.flush()
            # A hung cycle thread would keep a normal exit waiting forever.
            os._exit(ExitCode.STALLED)

    def _on_event(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_ERROR:
            log.error("cycle_crashed", job=event.job_id, error=repr(event.exception), traceback=event.traceback)
        elif event.code == EVENT_JOB_MISSED:
            log.warning("cycle_missed", job=event.job_id, scheduled=str(event.scheduled_run_time))
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            log.warning("cycle_still_running", job=event.job_id, note="the previous cycle is still running; this run is skipped")

    # --- control ------------------------------------------------------------------------------

    def stop(self, *_: object) -> None:
        if not self.app.interrupt.stopping:
            log.info("stopping")
            self.notify(STOPPING="1")
        self.app.interrupt.stop.set()
        try:
            self.scheduler.shutdown(wait=False)
        except Exception:  # already shut down
            pass

    def run(self) -> ExitCode:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        now = datetime.now(timezone.utc)
        self.scheduler.add_job(self._cycle, "interval", seconds=self.interval, next_run_time=now, id="cycle")
        watchdog_every = max(1.0, min(self.interval, 60.0))
        self.scheduler.add_job(self._watchdog, "interval", seconds=watchdog_every, id="watchdog")
        self.scheduler.add_listener(self._on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        log.info("daemon_started", interval_seconds=self.interval, state=str(self.app.config.state.path))
        self.notify(READY="1", STATUS="running")
        self.scheduler.start()  # returns after stop()
        # Let the cycle in progress finish its current step and commit. A call that hangs longer
        # is not waited for: every finished step is committed already, and closing the database
        # and HTTP clients under a thread still using them would crash the process.
        if not self._cycle_lock.acquire(timeout=STOP_GRACE_SECONDS):
            log.warning("stopping_without_waiting", grace_seconds=STOP_GRACE_SECONDS, note="a call is still in flight; every finished step is committed")
            log.info("daemon_stopped", exit_code=int(self.exit_code))
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(self.exit_code))
        self._cycle_lock.release()
        log.info("daemon_stopped", exit_code=int(self.exit_code))
        return self.exit_code
