"""Command line: argument parsing, exit codes, wiring.

    lead-poller [--config F]                 the daemon (one cycle per [schedule] interval_seconds)
    lead-poller [--config F] --run-once      one cycle, then exit (cron, timers, CI)
    lead-poller [--config F] --run-once --dry-run
                                             one cycle that reads everything and writes nothing
    lead-poller backfill --since T [--until T] [--max-leads N] [--dry-run] [--config F]
    lead-poller backfill --users [--max-leads N] [--dry-run] [--config F]
    lead-poller retry [USER_ID ...] [--all-failed] [--config F]
    lead-poller check [--config F]           read-only preflight: configuration, both vendors, the Lead object
    lead-poller status [--config F] [--json | --prometheus]   where it stands, from the state database only
    lead-poller demo [--rules]               the real job against the built-in sandbox

Exit codes are `errors.ExitCode`, listed in the README.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

from poller import config as config_module
from poller import logs
from poller.errors import ConfigError, ExitCode, FatalError, PollerError

DEFAULT_CONFIG = Path("config.toml")
# Commands whose stdout is their result (a report, a document, one line saying what changed): their
# log goes to stderr. The daemon, --run-once and backfill log on stdout (journald, cron).
RESULT_COMMANDS = frozenset({"check", "status", "retry", "reset-checkpoint"})


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error exits 78 (EX_CONFIG, like every argument that cannot
    work), not 2: under systemd, RestartPreventExitStatus=78 then ends the restart loop of a bad
    ExecStart= line. The message is argparse's usual one: the usage, then `prog: error: ...`."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(int(ExitCode.CONFIG), f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="PATH", help="configuration file (default: ./config.toml)")

    parser = _Parser(
        prog="lead-poller",
        description="Turn Auth0 sign-ins into Salesforce Leads, once each.",
        parents=[common],
    )
    parser.add_argument("--run-once", action="store_true", help="run one cycle and exit (75 if users were left pending by temporary errors)")
    dry_run_help = "read logs and profiles and print every decision and lead payload, but write nothing anywhere"
    parser.add_argument("--dry-run", action="store_true", default=argparse.SUPPRESS, help=f"with --run-once: {dry_run_help}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    backfill = commands.add_parser(
        "backfill",
        parents=[common],
        help="turn past sign-ins (retained logs) or not-yet-flagged users into leads, without moving the checkpoint",
    )
    backfill.add_argument("--since", metavar="TIME", help="replay the retained logs from this RFC 3339 time, e.g. 2026-11-01T00:00:00Z")
    backfill.add_argument("--until", metavar="TIME", help="... up to this time (default: now)")
    backfill.add_argument("--users", action="store_true", help="enqueue every user not yet flagged recordedAsLead (user search)")
    backfill.add_argument("--max-leads", metavar="N", help="create at most N leads in this run; the rest stay pending")
    backfill.add_argument("--dry-run", action="store_true", default=argparse.SUPPRESS, help=dry_run_help)

    retry = commands.add_parser("retry", parents=[common], help="make failed users pending again")
    retry.add_argument("user_ids", nargs="*", metavar="USER_ID")
    retry.add_argument("--all-failed", action="store_true", help="every failed user")

    reset = commands.add_parser(
        "reset-checkpoint",
        parents=[common],
        help="forget the log stream position (the next run starts from [auth0] start_from), or --to a log_id; stop the daemon first",
    )
    reset.add_argument("--to", metavar="LOG_ID", help="a log_id to read on from, exactly as Auth0 gave it")

    commands.add_parser("check", parents=[common], help="read-only preflight: one line per check; non-zero exit if one fails")

    status = commands.add_parser("status", parents=[common], help="where lead-poller stands, from the state database only (no network)")
    output = status.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON document (its keys are documented in the README)")
    output.add_argument("--prometheus", action="store_true", help="the metrics in Prometheus text format (node_exporter's textfile collector)")

    demo = commands.add_parser("demo", help="run the real job against the built-in sandbox of Auth0 and Salesforce")
    demo.add_argument("--keep", type=Path, metavar="DIR", help="keep the sandbox's config, CA and state in DIR")
    demo.add_argument("--rules", action="store_true", help="with a non-default lead mapping, filters and consent")
    return parser


def _configure_logging(command: str | None, config: config_module.Config | None = None, *, dry_run: bool = False, level: str | None = None) -> None:
    """The same log set-up for every command: JSON lines when the log's stream is not a terminal, a
    readable console on one. The stream is stdout, except for the commands whose stdout is their
    result and for a dry run (its decisions are on stdout): stderr then. Called once before the
    configuration is read (so that even its errors are reported alike) and again with it."""
    stream = sys.stderr if dry_run or command in RESULT_COMMANDS else sys.stdout
    if config is None:
        logs.configure(level=level or "info", stream=stream)
    else:
        logs.configure(level=level or config.logging.level, pii=config.logging.pii, secret_values=config.secrets(), stream=stream)


def load_config(path: Path, *, command: str | None = None, dry_run: bool = False, require_secrets: bool = True, level: str | None = None) -> config_module.Config:
    config = config_module.load(path, require_secrets=require_secrets)
    _configure_logging(command, config, dry_run=dry_run, level=level)
    return config


class UsageError(Exception):
    """A command-line argument that cannot work: one line, exit 78 (like `retry` without users)."""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help or --version (0), a usage error (78, see _Parser)
        return exc.code if isinstance(exc.code, int) else int(ExitCode.CONFIG if exc.code else ExitCode.OK)
    prefix = f"lead-poller{' ' + args.command if args.command else ''}"
    config_path: Path = getattr(args, "config", DEFAULT_CONFIG)
    dry_run: bool = getattr(args, "dry_run", False)
    try:
        if args.command == "demo":
            from poller.sandbox.demo import run_demo

            return int(run_demo(keep=args.keep, rules=args.rules))
        if args.command == "backfill":
            backfill = _backfill_arguments(args)
            _configure_logging(args.command, dry_run=dry_run)
            with _stop_on_signals() as stop:
                return _backfill(load_config(config_path, command=args.command, dry_run=dry_run), stop=stop, dry_run=dry_run, **backfill)
        if dry_run and (args.command is not None or not args.run_once):
            raise UsageError("--dry-run goes with --run-once or backfill: the daemon never runs dry")
        _configure_logging(args.command, dry_run=dry_run, level="warning" if args.command in ("check", "status") else None)
        if args.command == "check":
            from poller import check

            # Loaded as every command loads it: [logging] pii and the secrets to scrub apply to the report.
            return int(check.run(config_path, out=sys.stdout, load=lambda path, _environ: load_config(path, command="check", level="warning")))
        if args.command == "status":
            return _status(config_path, as_json=args.json, as_prometheus=args.prometheus)
        if args.command in ("retry", "reset-checkpoint"):
            if args.command == "retry" and not args.user_ids and not args.all_failed:
                raise UsageError("name USER_IDs or pass --all-failed")
            if args.command == "retry" and args.user_ids and args.all_failed:
                raise UsageError("name USER_IDs or pass --all-failed, not both")
            if args.command == "reset-checkpoint" and args.to is not None and not (args.to.isascii() and args.to.isdigit()):
                raise UsageError(f"--to {args.to!r}: a log_id is digits, exactly as Auth0 gave it")
            # State edits call no vendor: the service's secrets are not needed to run them.
            config = load_config(config_path, command=args.command, require_secrets=False)
            if args.command == "retry":
                return _retry(config, args.user_ids, args.all_failed)
            return _reset_checkpoint(config, args.to)
        if args.run_once:
            # From before the configuration is read and the heavy modules load, until the process
            # ends: a stop request at any moment of a one-shot run is a clean exit, never a kill.
            with _stop_on_signals() as stop:
                return _run(load_config(config_path, dry_run=dry_run), once=True, dry_run=dry_run, stop=stop)
        return _run(load_config(config_path), once=False)
    except UsageError as exc:
        # About the command line, like argparse's own errors: one line on stderr, no log line.
        print(f"{prefix}: {exc}", file=sys.stderr)
        return int(ExitCode.CONFIG)
    except ConfigError as exc:
        return logs.report_fatal(
            prefix, str(exc) + _state_path_hint(exc), code="config_invalid", exit_code=exc.exit_code,
            summary=str(exc).splitlines()[0], problems=[str(p) for p in exc.problems],
        )
    except FatalError as exc:
        return logs.report_fatal(prefix, str(exc), code=exc.code, exit_code=exc.exit_code)
    except PollerError as exc:
        return logs.report_fatal(prefix, str(exc), code=getattr(exc, "code", "error"), exit_code=exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.OK)
    except BrokenPipeError:
        # Whoever read our output went away (`lead-poller status | head -1`): nobody is left to tell.
        logs.reader_gone(sys.stdout)
        return int(ExitCode.OK)
    except Exception as exc:  # a bug: say so, with the traceback in the log
        logs.get_logger("poller").exception("unexpected_error", error=repr(exc))
        print(f"{prefix}: unexpected error: {logs.for_person(repr(exc))} (this is a bug; the log has the traceback)", file=sys.stderr)
        return int(ExitCode.ERROR)


def _state_path_hint(exc: ConfigError) -> str:
    """`[state] path` missing outside systemd: the unit's $STATE_DIRECTORY is not set in a shell."""
    if any(p.key == "state.path" and p.value is None for p in exc.problems) and not os.environ.get("STATE_DIRECTORY"):
        return (
            "\n  (without [state] path, only a systemd unit's $STATE_DIRECTORY says where the state is, and a shell"
            ' has none: set [state] path = "/var/lib/lead-poller/state.db", the unit\'s StateDirectory=, in the file)'
        )
    return ""


def _no_state(config: config_module.Config) -> FatalError:
    """The one message of `status`, `retry` and `reset-checkpoint` when there is no state database."""
    where = f" in {config.source}" if config.source else ""
    return FatalError(
        f"no state database at {config.state.path}: check [state] path{where} (and that a cycle has run with this configuration); nothing was created",
        code="state_missing",
        exit_code=ExitCode.ERROR,
    )


def _state_exists(path: Path) -> bool:
    """As `StateReader.open` sees it: an empty file is no state yet either (a folder is left to the
    ledger, which says so)."""
    return path.exists() and path.stat().st_size > 0


def _run(config: config_module.Config, *, once: bool, dry_run: bool = False, stop: threading.Event | None = None) -> int:
    from poller.app import App
    from poller.pacing import Interrupt

    with App(config, dry_run=dry_run, interrupt=Interrupt(stop=stop)) as app:
        if once:
            if app.interrupt.stopping:
                return int(ExitCode.OK)  # asked to stop before the cycle began: nothing was started
            report = app.run_cycle()
            # Stopped on request: the step in flight finished and everything done is committed.
            return int(ExitCode.OK if report.interrupted else report.exit_code)
        from poller.scheduler import Daemon
        from poller.sdnotify import Notifier

        _warn_if_watchdog_too_short(config)
        server = _metrics_server(config)
        try:
            return int(Daemon(app, notify=Notifier.from_environment()).run())
        finally:
            if server is not None:
                server.close()


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM/SIGINT during a one-shot run (--run-once, backfill): the first sets the event it
    yields (the run lets the current step finish and commit, or does not begin); a second one
    exits at once (a step cut short is redone safely by the next run)."""
    received: list[int] = []
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        received.append(signum)
        if len(received) == 1:
            logs.get_logger("poller").info("stopping", signal=signal.Signals(signum).name)
            stop.set()
            return
        logs.get_logger("poller").warning("stopping_now", signal=signal.Signals(signum).name)
        with contextlib.suppress(OSError, ValueError):  # a reader that is gone (`| head`)
            sys.stdout.flush()
        os._exit(int(ExitCode.TEMPORARY))

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stall_after(config: config_module.Config) -> float:
    return config.schedule.watchdog_intervals * config.schedule.interval_seconds


def _metrics_server(config: config_module.Config):  # -> MetricsServer | None
    if config.metrics.listen is None:
        return None
    from poller.metrics import MetricsServer

    return MetricsServer(config.metrics.listen, config.state.path, stall_after_seconds=_stall_after(config))


def _warn_if_watchdog_too_short(config: config_module.Config) -> None:
    """WATCHDOG=1 is sent after each cycle; systemd's WatchdogSec must outlast two intervals and a cycle."""
    from poller.sdnotify import watchdog_seconds

    limit = watchdog_seconds()
    needed = 2 * config.schedule.interval_seconds + config.schedule.deadline_seconds
    if limit is not None and limit < needed:
        logs.get_logger("poller.daemon").warning(
            "systemd_watchdog_too_short", watchdog_seconds=limit, needed_seconds=needed,
            note="raise WatchdogSec= in the unit, or systemd will restart a healthy daemon between cycles",
        )


def _status(config_path: Path, *, as_json: bool, as_prometheus: bool) -> int:
    import json

    from poller import status

    # No vendor is called: the service's secrets are not needed to look at its state.
    config = load_config(config_path, command="status", require_secrets=False, level="warning")
    if as_prometheus:
        from poller import metrics

        sys.stdout.write(metrics.text(config.state.path, stall_after_seconds=_stall_after(config)))
        return int(ExitCode.OK)
    document = status.snapshot(config.state.path, stall_after_seconds=_stall_after(config))
    if document is None:
        raise _no_state(config)
    print(json.dumps(document, indent=2) if as_json else status.render(document))
    return int(ExitCode.OK)


def _time(option: str, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option} {value!r}: not an RFC 3339 time, e.g. 2026-11-01T00:00:00Z") from None
    if parsed.tzinfo is None:
        raise UsageError(f"{option} {value!r}: give a time zone, e.g. 2026-11-01T00:00:00Z")
    return parsed


def _backfill_arguments(args: argparse.Namespace) -> dict[str, object]:
    if bool(args.since) == bool(args.users):
        raise UsageError("give either --since TIME (replay retained logs) or --users (users not yet flagged)")
    if args.until and not args.since:
        raise UsageError("--until goes with --since")
    max_leads = None
    if args.max_leads is not None:
        if not args.max_leads.isdigit() or int(args.max_leads) < 1:
            raise UsageError(f"--max-leads {args.max_leads!r}: give a whole number of leads, at least 1")
        max_leads = int(args.max_leads)
    since = _time("--since", args.since) if args.since else None
    until = _time("--until", args.until) if args.until else None
    now = datetime.now(timezone.utc)
    if since is not None and since >= (until or now):
        raise UsageError(f"--since {args.since} is not before {'--until ' + args.until if until else 'now'}")
    return {"since": since, "until": until, "max_leads": max_leads}


def _backfill(config: config_module.Config, *, stop: threading.Event, since: datetime | None, until: datetime | None, max_leads: int | None, dry_run: bool) -> int:
    from poller.app import App
    from poller.pacing import Interrupt

    with App(config, dry_run=dry_run, interrupt=Interrupt(stop=stop)) as app:
        if app.interrupt.stopping:
            return int(ExitCode.TEMPORARY)  # stopped before it began: nothing was queued, run it again
        if since is None:
            report = app.backfill_users(max_leads=max_leads)
        else:
            report = app.backfill_logs(since, until, max_leads=max_leads)
    return int(report.exit_code)


def _retry(config: config_module.Config, user_ids: list[str], all_failed: bool) -> int:
    import time

    from poller.ledger import Ledger

    if not _state_exists(config.state.path):
        raise _no_state(config)
    # Beside a running daemon too: a requeue is one SQLite transaction.
    with Ledger(config.state.path, clock=time.time, exclusive=False) as ledger:
        # A named user who is not failed is said so by name: a typo must not pass for done.
        not_failed = {}
        for user_id in dict.fromkeys(user_ids):
            row = ledger.get(user_id)
            if row is None or row.status != "failed":
                not_failed[user_id] = "not in the state database" if row is None else f"is {row.status}"
        count = ledger.requeue_failed(None if all_failed else user_ids)
    for user_id, why in not_failed.items():
        print(f"{user_id}: {why}, not failed; left as it is", file=sys.stderr)
    if count == 0 and not all_failed:
        print(f"no failed user among {', '.join(user_ids)}; nothing changed", file=sys.stderr)
        return int(ExitCode.OK)
    print(f"{count} user(s) pending again; the next cycle works them")
    return int(ExitCode.OK)


def _reset_checkpoint(config: config_module.Config, to: str | None) -> int:
    import time

    from poller.ledger import Ledger

    if not _state_exists(config.state.path):
        raise _no_state(config)
    with Ledger(config.state.path, clock=time.time) as ledger:  # the poller must be stopped
        previous = ledger.reset_checkpoint(to)
    where = f"the logs after log_id {to}" if to else f"where [auth0] start_from = {config.auth0.start_from!r} says"
    print(f"checkpoint {previous or '(none)'} forgotten; the next run reads {where}")
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
