"""The built-in sandbox: HTTPS emulators of the Auth0 Management API and the Salesforce REST API.

`Sandbox` starts both on 127.0.0.1 (ephemeral ports, one throwaway CA), and writes a config.toml
and a CA bundle that point lead-poller at them, exactly as a user points it at real tenants: domains
as host:port, secrets in the environment. The demo, the tests and the benchmark all use it.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from poller.sandbox.auth0 import Auth0Emulator
from poller.sandbox.salesforce import SalesforceEmulator
from poller.sandbox.tls import SandboxCA

AUTH0_CLIENT_ID = "sandbox-auth0-m2m-app"
SALESFORCE_CLIENT_ID = "3MVG9sandbox.connected.app"
COMPANY = "Example Web Signups"


class Sandbox:
    def __init__(self, workdir: Path, *, auth0: dict[str, Any] | None = None, salesforce: dict[str, Any] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        # Fresh secrets each time, so a test can look for them in any output.
        self.auth0_secret = "a0s_" + secrets.token_urlsafe(24)
        self.salesforce_secret = "sfs_" + secrets.token_urlsafe(24)
        self.ca = SandboxCA()
        self.ca_bundle = self.ca.write_bundle(workdir / "sandbox-ca.pem")
        self.auth0 = Auth0Emulator(client_id=AUTH0_CLIENT_ID, client_secret=self.auth0_secret, **(auth0 or {}))
        self.salesforce = SalesforceEmulator(client_id=SALESFORCE_CLIENT_ID, client_secret=self.salesforce_secret, **(salesforce or {}))
        context = self.ca.server_context()
        self.auth0.serve(context)
        self.salesforce.serve(context)

    def distrust(self, emulator: Auth0Emulator | SalesforceEmulator) -> None:
        """Serve `emulator` from now on with a certificate of another CA, which the bundle does not
        trust (a TLS-intercepting proxy, a missing ca_bundle); its port changes, so write the config after."""
        emulator.stop()
        emulator.serve(SandboxCA().server_context())

    def env(self) -> dict[str, str]:
        """The secrets, as environment variables (where they belong)."""
        return {"AUTH0_CLIENT_SECRET": self.auth0_secret, "SALESFORCE_CLIENT_SECRET": self.salesforce_secret}

    def secret_values(self) -> list[str]:
        return [self.auth0_secret, self.salesforce_secret]

    def issued_tokens(self) -> list[str]:
        """Every token the emulators handed out so far (none may ever appear in any output)."""
        return [*self.auth0.issued_tokens, *self.salesforce.issued_tokens]

    def config_text(self, *, state_path: Path | None = None, extra: str = "", **sections: dict[str, Any]) -> str:
        """A config.toml for this sandbox. `sections` override or add keys: auth0={"start_from": "oldest"}."""
        values: dict[str, dict[str, Any]] = {
            "auth0": {"domain": self.auth0.host, "client_id": AUTH0_CLIENT_ID, "start_from": "oldest"},
            "salesforce": {"domain": self.salesforce.host, "client_id": SALESFORCE_CLIENT_ID, "company": COMPANY},
            "schedule": {"interval_seconds": 60},
            "state": {"path": str(state_path or self.workdir / "state.db")},
            "http": {"ca_bundle": str(self.ca_bundle), "timeout_seconds": 5, "connect_timeout_seconds": 5},
        }
        for name, overrides in sections.items():
            values.setdefault(name, {}).update(overrides)
        lines: list[str] = []
        for name, table in values.items():
            lines.append(f"[{name}]")
            for key, value in table.items():
                if value is not None:
                    lines.append(f"{key} = {_toml(value)}")
            lines.append("")
        return "\n".join(lines) + extra

    def write_config(self, path: Path | None = None, **kwargs: Any) -> Path:
        path = path or self.workdir / "config.toml"
        path.write_text(self.config_text(**kwargs), encoding="utf-8")
        return path

    def close(self) -> None:
        self.auth0.stop()
        self.salesforce.stop()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
