"""`python -m poller.sandbox serve --dir DIR`: keep a sandbox running to try lead-poller by hand.

Starts both emulators, seeds them (the demo's users and log events by default), and writes into DIR
what a real installation has: `config.toml`, the CA bundle `sandbox-ca.pem`, the secrets as an
environment file `secrets.env` and as systemd-style credential files in `credentials/`. Then serves
until SIGTERM or SIGINT (Ctrl-C). Every port is new each time, so the files are rewritten each time.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from poller.sandbox import Sandbox
from poller.sandbox.scenario import demo_scenario


def _write_secret_files(sandbox: Sandbox, directory: Path) -> tuple[Path, Path]:
    env_file = directory / "secrets.env"
    env_file.touch(mode=0o600)
    env_file.write_text("".join(f"{name}={value}\n" for name, value in sandbox.env().items()), encoding="utf-8")
    credentials = directory / "credentials"
    credentials.mkdir(mode=0o700, exist_ok=True)
    for name, value in sandbox.env().items():
        path = credentials / name
        path.touch(mode=0o600)
        path.write_text(value, encoding="utf-8")
    return env_file, credentials


def serve(directory: Path, *, seed: str) -> int:
    directory = directory.resolve()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with Sandbox(directory) as sandbox:
        if seed == "demo":
            scenario = demo_scenario()
            sandbox.auth0.add_users(scenario.users)
            sandbox.auth0.add_logs(scenario.logs)
        config = sandbox.write_config(directory / "config.toml", state_path=directory / "state.db")
        env_file, credentials = _write_secret_files(sandbox, directory)
        print(f"Auth0 emulator       https://{sandbox.auth0.host}")
        print(f"Salesforce emulator  https://{sandbox.salesforce.host}")
        print(f"config               {config}")
        print(f"secrets              {env_file} (or {credentials}/ as CREDENTIALS_DIRECTORY)")
        print("try, in another shell:")
        print(f"  set -a; . {env_file}; set +a")
        print(f"  lead-poller check --config {config}")
        print(f"  lead-poller --config {config} --run-once")
        print(f"  lead-poller status --config {config}")
        print("serving until SIGTERM or Ctrl-C", flush=True)
        stop.wait()
    print("sandbox stopped", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m poller.sandbox", description="Keep the built-in Auth0 and Salesforce sandbox running.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("serve", help="serve both emulators and write config, CA and secrets into DIR")
    run.add_argument("--dir", type=Path, required=True, metavar="DIR")
    run.add_argument("--seed", choices=("demo", "none"), default="demo", help="demo: the demo's users and log events (default); none: empty tenant and org")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    return serve(args.dir, seed=args.seed)


if __name__ == "__main__":
    os.umask(0o077)  # the directory holds secrets
    sys.exit(main())
