"""Command line: argument parsing, exit codes, wiring.

    lead-poller [--config F]                 the daemon (one cycle per [schedule] interval_seconds)
    lead-poller [--config F] --run-once      one cycle, then exit (cron, timers, CI)
    lead-poller retry [USER_ID ...] [--all-failed] [--config F]
    lead-poller check [--config F]           read-only preflight: configuration, both vendors, the Lead object
    lead-poller status [--config F] [--json | --prometheus]   where it stands, from the state database only
    lead-poller demo                         the real job against the built-in sandbox

Exit codes are `errors.ExitCode`, listed in the README.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    retry = commands.add_parser("retry", parents=[common], help="make failed users pending again")
    retry.add_argument("user_ids", nargs="*", metavar="USER_ID")
    retry.add_argument("--all-failed", action="store_true", help="every failed user")

    commands.add_parser("check", parents=[common], help="read-only preflight: one line per check; non-zero exit if one fails")

    status = commands.add_parser("status", parents=[common], help="where lead-poller stands, from the state database only (no network)")
    output = status.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON document (its keys are documented in the README)")
    output.add_argument("--prometheus", action="store_true", help="the metrics in Prometheus text format (node_exporter's textfile collector)")

    demo = commands.add_parser("demo", help="run the real job against the built-in sandbox of Auth0 and Salesforce")
    demo.add_argument("--keep", type=Path, metavar="DIR", help="keep the sandbox's config, CA and state in DIR")
    return parser


def load_config(path: Path) -> config_module.Config:
    config = config_module.load(path)
    logs.configure(level=config.logging.level, pii=config.logging.pii, secret_values=config.secrets())
    return config


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config_path: Path = getattr(args, "config", DEFAULT_CONFIG)
    try:
        if args.command == "demo":
            from poller.sandbox.demo import run_demo

            return int(run_demo(keep=args.keep))
        if args.command == "check":
            from poller import check

            logs.configure(level="warning", stream=sys.stderr)
            return int(check.run(config_path, out=sys.stdout))
        if args.command == "status":
            return _status(config_path, as_json=args.json, as_prometheus=args.prometheus)
        config = load_config(config_path)
        if args.command == "retry":
            return _retry(config, args.user_ids, args.all_failed)
        return _run(config, once=args.run_once)
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


def _run(config: config_module.Config, *, once: bool) -> int:
    from poller.app import App

    with App(config) as app:
        if once:
            report = app.run_cycle()
            return int(report.exit_code)
        from poller.scheduler import Daemon
        from poller.sdnotify import Notifier

        _warn_if_watchdog_too_short(config)
        server = _metrics_server(config)
        try:
            return int(Daemon(app, notify=Notifier.from_environment()).run())
        finally:
            if server is not None:
                server.close()


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


def _retry(config: config_module.Config, user_ids: list[str], all_failed: bool) -> int:
    from poller.ledger import Ledger

    if not user_ids and not all_failed:
        print("lead-poller retry: name USER_IDs or pass --all-failed", file=sys.stderr)
        return int(ExitCode.CONFIG)
    import time

    with Ledger(config.state.path, clock=time.time) as ledger:
        count = ledger.requeue_failed(None if all_failed else user_ids)
    print(f"{count} user(s) pending again; the next cycle works them")
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
