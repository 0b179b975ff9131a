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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

from poller import config as config_module
from poller import logs
from poller.errors import ConfigError, ExitCode, FatalError, PollerError

DEFAULT_CONFIG = Path("config.toml")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="PATH", help="configuration file (default: ./config.toml)")

    parser = argparse.ArgumentParser(
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


def load_config(path: Path, *, dry_run: bool = False) -> config_module.Config:
    config = config_module.load(path)
    # A dry run prints its decisions on stdout; the log goes to stderr then, out of their way.
    logs.configure(level=config.logging.level, pii=config.logging.pii, secret_values=config.secrets(), stream=sys.stderr if dry_run else None)
    return config


class UsageError(Exception):
    """A command-line argument that cannot work: one line, exit 78 (like `retry` without users)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config_path: Path = getattr(args, "config", DEFAULT_CONFIG)
    dry_run: bool = getattr(args, "dry_run", False)
    try:
        if args.command == "demo":
            from poller.sandbox.demo import run_demo

            return int(run_demo(keep=args.keep, rules=args.rules))
        if args.command == "backfill":
            backfill = _backfill_arguments(args)
            return _backfill(load_config(config_path, dry_run=dry_run), dry_run=dry_run, **backfill)
        if dry_run and (args.command is not None or not args.run_once):
            raise UsageError("--dry-run goes with --run-once or backfill: the daemon never runs dry")
        if args.command == "check":
            from poller import check

            logs.configure(level="warning", stream=sys.stderr)
            return int(check.run(config_path, out=sys.stdout))
        if args.command == "status":
            return _status(config_path, as_json=args.json, as_prometheus=args.prometheus)
        if args.command in ("retry", "reset-checkpoint"):
            # State edits call no vendor: the service's secrets are not needed to run them.
            config = config_module.load(config_path, require_secrets=False)
            if args.command == "retry":
                return _retry(config, args.user_ids, args.all_failed)
            return _reset_checkpoint(config, args.to)
        config = load_config(config_path, dry_run=dry_run)
        return _run(config, once=args.run_once, dry_run=dry_run)
    except UsageError as exc:
        print(f"lead-poller{' ' + args.command if args.command else ''}: {exc}", file=sys.stderr)
        return int(ExitCode.CONFIG)
    except ConfigError as exc:
        print(f"lead-poller: {exc}", file=sys.stderr)
        return int(ExitCode.CONFIG)
    except FatalError as exc:
        logs.get_logger("poller").error("fatal", code=exc.code, error=str(exc))
        print(f"lead-poller: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except PollerError as exc:
        print(f"lead-poller: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.OK)
    except Exception as exc:  # a bug: say so, with the traceback in the log
        logs.get_logger("poller").exception("unexpected_error", error=repr(exc))
        print(f"lead-poller: unexpected error: {exc!r} (this is a bug; the log has the traceback)", file=sys.stderr)
        return int(ExitCode.ERROR)


def _run(config: config_module.Config, *, once: bool, dry_run: bool = False) -> int:
    from poller.app import App

    with App(config, dry_run=dry_run) as app:
        if once:
            with _stop_on_signals(app):
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
def _stop_on_signals(app: Any) -> Iterator[None]:
    """SIGTERM/SIGINT during --run-once: the first lets the current step finish and commit; a
    second one exits at once (a step cut short is redone safely by the next run)."""
    received: list[int] = []

    def handle(signum: int, _frame: object) -> None:
        received.append(signum)
        if len(received) == 1:
            logs.get_logger("poller").info("stopping", signal=signal.Signals(signum).name)
            app.interrupt.stop.set()
            return
        logs.get_logger("poller").warning("stopping_now", signal=signal.Signals(signum).name)
        sys.stdout.flush()
        os._exit(int(ExitCode.TEMPORARY))

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
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

    logs.configure(level="warning", stream=sys.stderr)
    # No vendor is called: the service's secrets are not needed to look at its state.
    config = config_module.load(config_path, require_secrets=False)
    if as_prometheus:
        from poller import metrics

        sys.stdout.write(metrics.text(config.state.path, stall_after_seconds=_stall_after(config)))
        return int(ExitCode.OK)
    document = status.snapshot(config.state.path, stall_after_seconds=_stall_after(config))
    if document is None:
        print(f"lead-poller status: no state database at {config.state.path} yet (no cycle has run with this configuration)", file=sys.stderr)
        return int(ExitCode.ERROR)
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


def _backfill(config: config_module.Config, *, since: datetime | None, until: datetime | None, max_leads: int | None, dry_run: bool) -> int:
    from poller.app import App

    with App(config, dry_run=dry_run) as app:
        if since is None:
            report = app.backfill_users(max_leads=max_leads)
        else:
            report = app.backfill_logs(since, until, max_leads=max_leads)
    return int(report.exit_code)


def _retry(config: config_module.Config, user_ids: list[str], all_failed: bool) -> int:
    from poller.ledger import Ledger

    if not user_ids and not all_failed:
        print("lead-poller retry: name USER_IDs or pass --all-failed", file=sys.stderr)
        return int(ExitCode.CONFIG)
    import time

    # Beside a running daemon too: a requeue is one SQLite transaction.
    with Ledger(config.state.path, clock=time.time, exclusive=False) as ledger:
        count = ledger.requeue_failed(None if all_failed else user_ids)
    if count == 0 and not all_failed:
        print(f"no failed user among {', '.join(user_ids)}; nothing changed", file=sys.stderr)
        return int(ExitCode.OK)
    print(f"{count} user(s) pending again; the next cycle works them")
    return int(ExitCode.OK)


def _reset_checkpoint(config: config_module.Config, to: str | None) -> int:
    import time

    from poller.ledger import Ledger

    if to is not None and not (to.isascii() and to.isdigit()):
        raise UsageError(f"--to {to!r}: a log_id is digits, exactly as Auth0 gave it")
    with Ledger(config.state.path, clock=time.time) as ledger:  # the poller must be stopped
        previous = ledger.reset_checkpoint(to)
    where = f"log_id {to}" if to else f"[auth0] start_from = {config.auth0.start_from!r}"
    print(f"checkpoint {previous or '(none)'} forgotten; the next run reads from {where}")
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
