"""`lead-poller check`: a read-only preflight, one line per check, and what to do when one fails.

It writes nothing anywhere: no lead, no PATCH, no checkpoint, no ledger row, not even a new state
database (the state is read through `StateReader`). The only requests are token POSTs and GETs.

Exit code: 0 when every check passed (warnings allowed), 78 for an invalid configuration, 77 when a
vendor refused the credentials or a scope is missing, 65 when the state database cannot be used, 1
for any other failed check.
"""

from __future__ import annotations

import os
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

from poller import config as config_module
from poller.auth0_source import Auth0Source
from poller.config import HOST_PORT, Config, HttpConfig
from poller.errors import ConfigError, ExitCode, FatalError, PollerError, StateError
from poller.ledger import StateReader
from poller.logs import for_person
from poller.mapping import external_id_problems, field_problems, fits_without_describe, org_fields, required_problems
from poller.rules import lead_rules
from poller.pacing import Interrupt
from poller.salesforce_sink import SalesforceSink

AUTH0_SCOPES = ("read:logs", "read:users", "update:users_app_metadata")
# A broader scope that also grants what we need.
SCOPE_ALTERNATIVES = {"read:logs": ("read:logs_users",), "update:users_app_metadata": ("update:users",)}
SALESFORCE_USAGE_WARNING = 0.9

PASS, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"


@dataclass
class Checklist:
    out: TextIO
    results: list[tuple[str, ExitCode]] = field(default_factory=list)

    def line(self, verdict: str, name: str, detail: str, exit_code: ExitCode = ExitCode.ERROR) -> None:
        self.results.append((verdict, exit_code))
        self.out.write(f"{verdict:<5} {name:<22} {for_person(detail)}\n")
        self.out.flush()

    def passed(self, name: str, detail: str) -> None:
        self.line(PASS, name, detail)

    def warned(self, name: str, detail: str) -> None:
        self.line(WARN, name, detail)

    def failed(self, name: str, detail: str, exit_code: ExitCode = ExitCode.ERROR) -> None:
        self.line(FAIL, name, detail, exit_code)

    def skipped(self, name: str, why: str) -> None:
        self.line(SKIP, name, why)

    def exit_code(self) -> ExitCode:
        codes = {code for verdict, code in self.results if verdict == FAIL}
        for code in (ExitCode.CONFIG, ExitCode.CREDENTIALS, ExitCode.STATE):
            if code in codes:
                return code
        return ExitCode.ERROR if codes else ExitCode.OK

    def summary(self) -> str:
        failed = sum(1 for verdict, _ in self.results if verdict == FAIL)
        warned = sum(1 for verdict, _ in self.results if verdict == WARN)
        if failed:
            return f"{failed} check(s) failed, {warned} warning(s): fix the FAIL lines above and run check again."
        return f"All checks passed ({warned} warning(s))." if warned else "All checks passed."


def run(config_path: Path, *, out: TextIO, environ: Mapping[str, str] | None = None, load: Callable[..., Config] = config_module.load) -> ExitCode:
    checks = Checklist(out)
    try:
        config = load(config_path, environ)
    except ConfigError as exc:
        checks.failed("configuration", f"{config_path}: {len(exc.problems)} problem(s); fix them first", ExitCode.CONFIG)
        for problem in exc.problems:
            out.write(f"{'':<28} - {for_person(str(problem))}\n")
        out.write(checks.summary() + "\n")
        return checks.exit_code()
    checks.passed("configuration", f"{config_path} is valid")
    checkpoint = _check_state(checks, config)
    interrupt = Interrupt()
    _check_auth0(checks, config, checkpoint, interrupt)
    _check_salesforce(checks, config, interrupt)
    out.write(checks.summary() + "\n")
    return checks.exit_code()


# --- state ------------------------------------------------------------------------------------


def _check_state(checks: Checklist, config: Config) -> str | None:
    path = config.state.path
    try:
        reader = StateReader.open(path)
    except StateError as exc:
        checks.failed("state database", str(exc), ExitCode.STATE)
        return None
    except OSError as exc:
        checks.failed("state database", f"{path} cannot be read: {exc.strerror}", ExitCode.STATE)
        return None
    if reader is None:
        ancestor = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
        if ancestor is not None and not ancestor.is_dir():
            checks.failed("state database", f"{path} cannot be created: {ancestor} is a file, not a folder", ExitCode.STATE)
        elif ancestor is None or not os.access(ancestor, os.W_OK | os.X_OK):
            checks.failed("state database", f"{path} does not exist and cannot be created: {ancestor} is not writable for this user", ExitCode.STATE)
        else:
            missing = "" if ancestor == path.parent else f" (and the missing folders under {ancestor})"
            checks.passed("state database", f"none yet at {path}; the first cycle creates it{missing} and starts from start_from = {config.auth0.start_from!r}")
        return None
    with reader:
        checkpoint = reader.meta().get("checkpoint")
        version = reader.schema_version
    checks.passed("state database", f"{path} (schema {version}), checkpoint {checkpoint or 'not set yet'}")
    return checkpoint


# --- reachability -------------------------------------------------------------------------------


def _check_tls(checks: Checklist, name: str, domain: str, http: HttpConfig) -> bool:
    """DNS, TCP and a verified TLS handshake, with the same trust the adapters use."""
    match = HOST_PORT.match(domain)  # the configuration check has accepted it already
    host = match.group("host").strip("[]") if match else domain
    port = int(match.group("port")) if match and match.group("port") else 443
    trust = f"the CA bundle {http.ca_bundle}" if http.ca_bundle else "the system trust store"
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        checks.failed(name, f"{host} does not resolve ({exc.strerror}): check the domain in the config and this machine's DNS")
        return False
    context = ssl.create_default_context(cafile=str(http.ca_bundle) if http.ca_bundle else None)
    try:
        with socket.create_connection((host, port), timeout=http.connect_timeout_seconds) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                version = tls.version()
    except ssl.SSLCertVerificationError as exc:
        checks.failed(name, f"{host}:{port} answers, but its certificate is not trusted by {trust} ({exc.verify_message}): behind a TLS-inspecting proxy, set [http] ca_bundle", ExitCode.CONFIG)
        return False
    except (OSError, ssl.SSLError) as exc:
        checks.failed(name, f"cannot open a TLS connection to {host}:{port}: {exc.strerror or exc} (firewall, proxy, or a wrong port)")
        return False
    checks.passed(name, f"{host}:{port} resolves and answers over {version}, certificate verified against {trust}")
    return True


def _problem(exc: PollerError) -> tuple[str, ExitCode]:
    """The line to print and the exit code it stands for: a fatal answer carries its own (77 for
    credentials and scopes); anything temporary is an ordinary failed check."""
    code = exc.exit_code if isinstance(exc, FatalError) else ExitCode.ERROR
    return str(exc), ExitCode(code)


# --- Auth0 ------------------------------------------------------------------------------------


def _check_auth0(checks: Checklist, config: Config, checkpoint: str | None, interrupt: Interrupt) -> None:
    names = ("auth0 token", "auth0 scopes", "auth0 logs", "auth0 checkpoint")
    if not _check_tls(checks, "auth0 reachable", config.auth0.domain, config.http):
        for name in names:
            checks.skipped(name, "Auth0 is not reachable")
        return
    source = Auth0Source(config.auth0, config.http, interrupt=interrupt, concurrency=1)
    try:
        try:
            scopes = source.token_scopes()
        except PollerError as exc:
            message, code = _problem(exc)
            checks.failed("auth0 token", message, code)
            for name in names[1:]:
                checks.skipped(name, "no Auth0 token")
            return
        checks.passed("auth0 token", f"obtained for client {config.auth0.client_id}")
        _check_scopes(checks, scopes)
        _check_logs(checks, source, checkpoint)
    finally:
        source.close()


def _check_scopes(checks: Checklist, scopes: frozenset[str] | None) -> None:
    if scopes is None:
        checks.warned("auth0 scopes", "the token response named no scopes; cannot tell whether " + ", ".join(AUTH0_SCOPES) + " are granted")
        return
    missing = [s for s in AUTH0_SCOPES if s not in scopes and not any(a in scopes for a in SCOPE_ALTERNATIVES.get(s, ()))]
    if missing:
        checks.failed(
            "auth0 scopes",
            f"the application lacks {', '.join(missing)}: Auth0 Dashboard > Applications > APIs > Auth0 Management API > "
            "Machine to Machine Applications, open this application and tick them",
            ExitCode.CREDENTIALS,
        )
        return
    checks.passed("auth0 scopes", "granted: " + ", ".join(AUTH0_SCOPES))


def _check_logs(checks: Checklist, source: Auth0Source, checkpoint: str | None) -> None:
    events: list[dict[str, Any]] = []
    try:
        if checkpoint:
            events, _ = source.read_page(checkpoint)
            checks.passed("auth0 logs", f"one page read after the checkpoint: {len(events)} event(s) waiting" + (" (100 or more)" if len(events) >= 100 else ""))
        else:
            newest, _ = source.find_start("now")
            checks.passed("auth0 logs", f"readable; the newest event is {newest}" if newest else "readable; the tenant has no log events yet")
    except PollerError as exc:
        message, code = _problem(exc)
        checks.failed("auth0 logs", message, code)
        checks.skipped("auth0 checkpoint", "the log stream is not readable")
        return
    if not checkpoint:
        checks.passed("auth0 checkpoint", "none yet (nothing to verify)")
        return
    try:
        kept = source.log_exists(checkpoint)
        lookup_missing = False
        if not kept:
            # An API that answers 404 for every log id (no GET /api/v2/logs/{id}) says nothing about
            # the checkpoint: ask for a log that exists, the newest just read or searched for.
            newest = next((e["log_id"] for e in reversed(events) if isinstance(e.get("log_id"), str)), None) or source.find_start("now")[0]
            lookup_missing = newest is not None and not source.log_exists(newest)
    except PollerError as exc:
        message, code = _problem(exc)
        checks.failed("auth0 checkpoint", message, code)
        return
    if kept:
        checks.passed("auth0 checkpoint", f"{checkpoint} is still in Auth0's log stream")
    elif lookup_missing:
        checks.warned("auth0 checkpoint", "this API answers 404 even for a log it just listed (no GET /api/v2/logs/{id}): "
                      "cannot tell whether the checkpoint is still kept")
    else:
        checks.failed(
            "auth0 checkpoint",
            f"Auth0 no longer keeps the checkpoint's event {checkpoint} (logs are kept 1 to 30 days by plan): logins dropped "
            "before they were read are lost; run lead-poller more often than the retention period",
        )


# --- Salesforce -------------------------------------------------------------------------------


def _check_salesforce(checks: Checklist, config: Config, interrupt: Interrupt) -> None:
    names = ("salesforce token", "lead fields", "salesforce api usage")
    if not _check_tls(checks, "salesforce reachable", config.salesforce.domain, config.http):
        for name in names:
            checks.skipped(name, "Salesforce is not reachable")
        return
    sink = SalesforceSink(config.salesforce, config.http, interrupt=interrupt)
    try:
        try:
            sink.connect()
        except PollerError as exc:
            message, code = _problem(exc)
            checks.failed("salesforce token", message, code)
            for name in names[1:]:
                checks.skipped(name, "no Salesforce token")
            return
        checks.passed("salesforce token", f"obtained on {config.salesforce.domain} for consumer key {config.salesforce.client_id[:12]}...")
        try:
            describe = sink.describe_lead()
        except PollerError as exc:
            _no_describe(checks, config, exc)
            _check_usage(checks, sink.api_usage, answered=False)
        else:
            check_lead_fields(checks, describe, config)
            _check_usage(checks, sink.api_usage, answered=True)
    finally:
        sink.close()


def _no_describe(checks: Checklist, config: Config, exc: PollerError) -> None:
    """The run's verdict on an API without the Lead describe (`App.lead_fields`): the standard
    fields carry on, anything else waits for a describe."""
    message, code = _problem(exc)
    if getattr(exc, "code", None) != "salesforce_describe_missing":
        checks.failed("lead fields", f"the Lead object cannot be described: {message}", code)
    elif fits_without_describe(lead_rules(config).mapping, config.salesforce.external_id_field):
        checks.warned("lead fields", "this API has no Lead describe (404): runs use the standard Lead fields and lengths, "
                      "and the mapping cannot be checked against the org")
    else:
        checks.failed("lead fields", "this API has no Lead describe (404), which custom fields and external_id_field need: "
                      "no lead is written with this mapping", ExitCode.CONFIG)


def check_lead_fields(checks: Checklist, describe: dict[str, Any], config: Config) -> None:
    """Compare the org's Lead describe with the configured mapping ([lead.fields]): the same check
    the poller makes before it works any user (`mapping.check_against_describe`), one line per kind."""
    mapping = lead_rules(config).mapping
    fields = org_fields(describe)

    required = required_problems(mapping, fields, external_id_field=config.salesforce.external_id_field)
    if required:
        checks.failed("lead required fields", "; ".join(str(p) for p in required), ExitCode.CONFIG)
    else:
        filled = [f.name for f in fields.values() if f.required and mapping.get(f.name) is not None]
        checks.passed("lead required fields", "every required Lead field is filled: " + (", ".join(filled) or "none required"))

    problems = field_problems(mapping, fields)
    if problems:
        checks.failed("lead mapped fields", "; ".join(str(p) for p in problems), ExitCode.CONFIG)
    else:
        lengths = ", ".join(f"{fields[r.field.lower()].name} ({fields[r.field.lower()].length or fields[r.field.lower()].type})" for r in mapping.fields)
        checks.passed("lead mapped fields", f"exist and are createable; values are cut to these lengths: {lengths}")

    external = config.salesforce.external_id_field
    if external:
        # The same verdict the poller reaches at start (exit 78 there too).
        problems = external_id_problems(fields, external)
        if problems:
            checks.failed("lead external id", "; ".join(p.why for p in problems), ExitCode.CONFIG)
        else:
            checks.passed("lead external id", f"Lead.{fields[external.lower()].name} is a unique, case-sensitive External ID")


def _check_usage(checks: Checklist, usage: tuple[int, int] | None, *, answered: bool) -> None:
    if usage is None and not answered:
        checks.skipped("salesforce api usage", "no REST call succeeded (the usage comes with successful answers)")
        return
    if usage is None:
        checks.warned("salesforce api usage", "Salesforce sent no Sforce-Limit-Info header")
        return
    used, limit = usage
    share = used / limit if limit else 0.0
    detail = f"{used} of {limit} calls in the last 24 h ({share:.1%})"
    if share >= SALESFORCE_USAGE_WARNING:
        checks.warned("salesforce api usage", detail + ": close to the org's daily allowance; lead writes pause when it is spent")
    else:
        checks.passed("salesforce api usage", detail)
