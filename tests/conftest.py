"""Shared fixtures: a running sandbox (both emulators over real HTTPS) and the real CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from poller.sandbox import Sandbox
from poller.sandbox.scenario import log_event, make_log_id, user_profile

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def sandbox(tmp_path):
    with Sandbox(tmp_path / "sandbox") as sandbox:
        yield sandbox


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines the run printed (stdout is not a TTY, so every line is JSON)."""
        found = []
        for line in self.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    pass
        return found

    def event(self, name: str) -> dict[str, Any]:
        matches = [e for e in self.events if e.get("event") == name]
        assert matches, f"no {name!r} event in:\n{self.stdout}\n{self.stderr}"
        return matches[-1]


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH0_", "SALESFORCE_"))}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(REPO)
    return full_env


def run_cli(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60) -> Run:
    """Run `python -m poller ARGS` the way a user or cron does: a new process, the environment, a config file."""
    done = subprocess.run(
        [sys.executable, "-m", "poller", *map(str, args)],
        capture_output=True,
        text=True,
        env=cli_env(env),
        cwd=cwd or REPO,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def start_cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The CLI as a running process (a daemon to signal, a run to kill at a chosen request)."""
    return subprocess.Popen(
        [sys.executable, "-m", "poller", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(env),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def cli(sandbox):
    """Run the CLI against this test's sandbox: `cli("--run-once")`, with the sandbox config and secrets."""

    def run(*args: str | Path, config: Path | None = None, env: dict[str, str] | None = None, **kwargs: Any) -> Run:
        config = config or sandbox.workdir / "config.toml"
        if not config.exists():
            sandbox.write_config(config)
        return run_cli("--config", config, *args, env={**sandbox.env(), **(env or {})}, **kwargs)

    return run


class Tenant:
    """Builds users and log events into the sandbox's Auth0, with log ids in order."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.seq = 0

    def user(self, user_id: str, email: str | None = "default", **fields: Any) -> dict[str, Any]:
        if email == "default":
            email = f"{user_id.split('|')[-1]}@example.com"
        profile = user_profile(user_id, email=email, **fields)
        self.sandbox.auth0.add_users([profile])
        return profile

    def event(self, kind: str, user_id: str | None, **overrides: Any) -> dict[str, Any]:
        from datetime import datetime, timedelta, timezone

        self.seq += 1
        when = datetime(2026, 12, 1, tzinfo=timezone.utc) + timedelta(seconds=self.seq)
        event = log_event(kind, user_id=user_id, when=when, seq=self.seq, **overrides)
        self.sandbox.auth0.add_logs([event])
        return event

    def logins(self, *user_ids: str, kind: str = "s") -> None:
        for user_id in user_ids:
            self.event(kind, user_id)


def ledger_rows(sandbox) -> dict[str, tuple[str, str | None]]:
    """user id -> (status, reason), read straight from the state database the run left."""
    import sqlite3

    db = sqlite3.connect(sandbox.workdir / "state.db")
    try:
        return {uid: (status, reason) for uid, status, reason in db.execute("SELECT user_id, status, reason FROM users")}
    finally:
        db.close()


@pytest.fixture
def tenant(sandbox):
    return Tenant(sandbox)


__all__ = ["Run", "run_cli", "make_log_id", "ledger_rows"]


@pytest.fixture
def make_app(sandbox):
    """Build the production `App` in-process from a config the sandbox writes (for tests that need
    many cycles or a controlled clock; the CLI tests cover the process boundary)."""
    from poller import config as config_module
    from poller.app import App

    apps = []

    def build(clock=None, **sections: Any) -> App:
        path = sandbox.write_config(sandbox.workdir / f"config-{len(apps)}.toml", **sections)
        config = config_module.load(path, environ=sandbox.env())
        app = App(config, clock=clock) if clock else App(config)
        apps.append(app)
        return app

    yield build
    for app in apps:
        try:
            app.close()
        except Exception:
            pass
