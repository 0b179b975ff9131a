"""config.toml + environment -> one frozen, typed `Config`, with every problem reported at once.

Environment variables override the file and are where secrets belong (see ENV_OVERRIDES). Under systemd,
the same names may instead be files in `$CREDENTIALS_DIRECTORY` (`LoadCredential=`): an environment
variable wins over a credential file, which wins over the configuration file. Relative paths in the file
(`[state] path`, `[http] ca_bundle`) are taken relative to the file's folder, so a configuration means the
same thing whatever directory the daemon is started from; without `[state] path`, systemd's
`$STATE_DIRECTORY` (`StateDirectory=`) holds `state.db`.

Loading makes no network call: a wrong value is reported before anything is sent anywhere.
"""

from __future__ import annotations

import math
import os
import re
import ssl
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

from poller.errors import ConfigError, Problem, toml_value
from poller.mapping import COMPUTED_SOURCES, FIXED_FIELDS, FieldMapping, source_problem

DEFAULT_LOGIN_TYPES = ("s", "scoa", "sens", "sepft")
# Types that are logins by another name; anything else in `login_types` is almost certainly a typo
# or a token refresh, which would turn every refresh into a lead check.
KNOWN_LOGIN_TYPES = frozenset(
    {"s", "ss", "scoa", "sens", "sepft", "seotpft", "seoobft", "sercft", "sepkoobft", "sepkotpft", "sepkrcft", "sdel"}
)
SECRET_KEYS = frozenset({"auth0.client_secret", "salesforce.client_secret"})

# Environment variable -> (section, key). The Salesforce names are the seed Auth0 Action's own secrets.
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "AUTH0_DOMAIN": ("auth0", "domain"),
    "AUTH0_CLIENT_ID": ("auth0", "client_id"),
    "AUTH0_CLIENT_SECRET": ("auth0", "client_secret"),
    "SALESFORCE_DOMAIN": ("salesforce", "domain"),
    "SALESFORCE_CLIENT_ID": ("salesforce", "client_id"),
    "SALESFORCE_CLIENT_SECRET": ("salesforce", "client_secret"),
    "SALESFORCE_COMPANY": ("salesforce", "company"),
}


@dataclass(frozen=True)
class Auth0Config:
    domain: str
    client_id: str
    client_secret: str = field(repr=False)
    start_from: str = "now"
    login_types: tuple[str, ...] = DEFAULT_LOGIN_TYPES
    # per_endpoint: logs, user reads and user writes each have a bucket (Essentials, Professional);
    # global: one bucket for the whole Management API (Free; Enterprise's global limit).
    rate_limit_buckets: str = "per_endpoint"


@dataclass(frozen=True)
class SalesforceConfig:
    domain: str
    client_id: str
    client_secret: str = field(repr=False)
    company: str = ""
    api_version: str = "59.0"
    lead_source: str = "Auth0"
    on_duplicate: str = "adopt"  # adopt | allow_save | skip
    external_id_field: str | None = None


@dataclass(frozen=True)
class ScheduleConfig:
    interval_seconds: float = 300.0
    cycle_deadline_seconds: float = 0.0  # 0: the default, 80% of the interval (deadline_seconds)
    watchdog_intervals: float = 3.0

    @property
    def deadline_seconds(self) -> float:
        # Default: 80% of the interval, so a cycle that runs to its deadline ends before the next
        # one is due (APScheduler would skip a run that finds the previous one still going).
        return self.cycle_deadline_seconds or self.interval_seconds * 0.8


@dataclass(frozen=True)
class StateConfig:
    path: Path


@dataclass(frozen=True)
class HttpConfig:
    ca_bundle: Path | None = None
    timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 10.0


@dataclass(frozen=True)
class WorkConfig:
    max_attempts: int = 8
    backoff_base_seconds: float = 60.0
    backoff_cap_seconds: float = 6 * 3600.0
    concurrency: int = 4
    batch_profile_reads: bool = True  # user search settles already-flagged users, 100 a call


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"
    pii: str = "mask"  # mask | hash | plain


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint; off (None) unless `[metrics] listen` is set."""

    listen: tuple[str, int] | None = None


@dataclass(frozen=True)
class LeadConfig:
    """[lead]: who becomes a lead (filters, consent) and with what fields ([lead.fields])."""

    # Overrides of the built-in mapping, in file order: (field, mapping), or (field, None) to leave a
    # built-in field out. `mapping.lead_mapping` merges them with the built-in mapping.
    fields: tuple[tuple[str, FieldMapping | None], ...] = ()
    consent: str | None = None
    require_verified_email: bool = False
    skip_existing_contacts: bool = False
    allow_applications: tuple[str, ...] = ()
    deny_applications: tuple[str, ...] = ()
    allow_connections: tuple[str, ...] = ()
    deny_connections: tuple[str, ...] = ()
    allow_email_domains: tuple[str, ...] = ()
    deny_email_domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    auth0: Auth0Config
    salesforce: SalesforceConfig
    schedule: ScheduleConfig
    state: StateConfig
    http: HttpConfig
    work: WorkConfig
    logging: LoggingConfig
    metrics: MetricsConfig = MetricsConfig()
    source: Path | None = None
    lead: LeadConfig = field(default_factory=LeadConfig)

    def secrets(self) -> list[str]:
        """Values that must never appear in output; the log pipeline scrubs them."""
        return [s for s in (self.auth0.client_secret, self.salesforce.client_secret) if s]


# --- validation helpers -----------------------------------------------------------------------

HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d{1,5}))?$")
LOG_ID = re.compile(r"^[0-9]{1,200}$")  # ASCII digits only: \d also matches other scripts' digits
API_VERSION = re.compile(r"^\d{2,3}\.0$")
MIN_API_VERSION = 52.0  # Sforce-Duplicate-Rule-Header (v52); Collections upsert (v46)
SF_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _shown(key: str, value: Any) -> str:
    if key in SECRET_KEYS:
        return "(hidden)"
    return toml_value(value)


class _Reader:
    """Reads one section, type-checks each key, and collects problems instead of stopping at the first."""

    def __init__(self, raw: Mapping[str, Any], problems: list[Problem]) -> None:
        self.raw = raw
        self.problems = problems

    def section(self, name: str, known: set[str]) -> dict[str, Any]:
        value = self.raw.get(name, {})
        if not isinstance(value, dict):
            self.problems.append(Problem(f"[{name}]", toml_value(value), "must be a table"))
            return {}
        for key in sorted(set(value) - known):
            self.problems.append(Problem(f"{name}.{key}", None, f"unknown key (known: {', '.join(sorted(known))})"))
        return value

    def get(self, section: dict[str, Any], qualified: str, kind: type | tuple[type, ...], default: Any, check: Callable[[Any], str | None] | None = None) -> Any:
        key = qualified.split(".", 1)[1]
        if key not in section:
            return default
        value = section[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            self.problems.append(Problem(qualified, _shown(qualified, value), f"must be {_kind_name(kinds)}"))
            return default
        if not isinstance(value, kinds):
            self.problems.append(Problem(qualified, _shown(qualified, value), f"must be {_kind_name(kinds)}"))
            return default
        if check is not None:
            why = check(value)
            if why:
                self.problems.append(Problem(qualified, _shown(qualified, value), why))
                return default
        return value

    def require(self, value: Any, qualified: str, env: str | None) -> None:
        if any(p.key == qualified for p in self.problems):
            return  # already reported as wrong; "missing" would only confuse
        if value in (None, ""):
            if qualified in SECRET_KEYS:
                # Secrets belong outside the file: name that way first.
                self.problems.append(Problem(qualified, None, f"is required: set the environment variable {env}, or a systemd credential file named {env}"))
                return
            where = f" (or the environment variable {env})" if env else ""
            self.problems.append(Problem(qualified, None, f"is required: set it in the file{where}"))


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", list: "a list"}
    if float in kinds:
        kinds = tuple(k for k in kinds if k is not int)  # "a number" already says a whole one will do
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _at_least(minimum: float) -> Callable[[Any], str | None]:
    return lambda value: None if value >= minimum else f"must be at least {minimum:g}"


def _between(low: float, high: float, *, above: bool = False) -> Callable[[Any], str | None]:
    """A finite number in [low, high] ((low, high] with `above`): inf, nan and 1e300 are typos."""

    def check(value: Any) -> str | None:
        if not math.isfinite(value) or value > high or (value <= low if above else value < low):
            lower = f"greater than {low:g}" if above else f"at least {low:g}"
            return f"must be {lower} and at most {high:g}"
        return None

    return check


DAY = 86400.0


def check_ca_bundle(path: Path) -> str | None:
    """The bundle must be a readable file of PEM certificates; found now, not at the first TLS call."""
    if not path.is_file():
        return f"no such file: {path}"
    try:
        ssl.create_default_context(cafile=str(path))
    except PermissionError:
        return f"cannot be read by this user: {path}"
    except (ssl.SSLError, OSError, ValueError) as exc:
        return f"is not a PEM bundle of CA certificates ({getattr(exc, 'reason', None) or exc})"
    return None


def check_domain(value: str, example: str = "example.eu.auth0.com") -> str | None:
    if "://" in value:
        return f"give the host only, without a scheme (all traffic is HTTPS), e.g. '{example}'"
    if "/" in value:
        return "give the host only, without a path"
    match = HOST_PORT.match(value)
    if not match:
        return "must be host or host:port"
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        return "the port must be between 1 and 65535"
    return None


def check_salesforce_domain(value: str) -> str | None:
    why = check_domain(value, "acme.my.salesforce.com")
    if why:
        return why
    host = value.split(":")[0].lower()
    if host in ("login.salesforce.com", "test.salesforce.com"):
        return (
            "the client credentials flow only works on your org's My Domain host; use '<name>.my.salesforce.com' "
            "(or '<name>--<sandbox>.sandbox.my.salesforce.com'), shown in Setup > My Domain"
        )
    if host.endswith(".lightning.force.com"):
        name = host[: -len(".lightning.force.com")]
        return f"that is the Lightning UI host; use the My Domain API host instead, e.g. '{name}.my.salesforce.com'"
    return None


def check_start_from(value: str) -> str | None:
    if value in ("now", "oldest") or LOG_ID.match(value):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return "must be 'now', 'oldest', an RFC 3339 timestamp (e.g. 2026-01-31T00:00:00Z) or a log_id (digits)"
    if parsed.tzinfo is None:
        return "an RFC 3339 timestamp needs a time zone, e.g. 2026-01-31T00:00:00Z"
    return None


def check_login_types(value: list[Any]) -> str | None:
    if not value:
        return "must name at least one log type, e.g. [\"s\"]"
    bad = [v for v in value if not isinstance(v, str)]
    if bad:
        return "must be a list of strings"
    unknown = [v for v in value if v not in KNOWN_LOGIN_TYPES]
    if unknown:
        return f"{', '.join(map(repr, unknown))} is not a successful-login type (known: {', '.join(sorted(KNOWN_LOGIN_TYPES))})"
    return None


def parse_listen(value: str) -> tuple[str, int] | None:
    """`host:port` -> (host, port); IPv6 hosts in brackets. None if it is not that."""
    match = HOST_PORT.match(value)
    if not match or match.group("port") is None or int(match.group("port")) > 65535:
        return None
    return match.group("host").strip("[]"), int(match.group("port"))


def check_listen(value: str) -> str | None:
    if parse_listen(value) is None:
        return "must be host:port, e.g. \"127.0.0.1:9464\" (\"[::1]:9464\" for IPv6)"
    return None


def read_credentials(environ: Mapping[str, str], problems: list[Problem]) -> dict[str, str]:
    """systemd credentials (`LoadCredential=`): files in $CREDENTIALS_DIRECTORY named like the
    environment variables. A trailing newline (as `echo` writes) is not part of the value."""
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return {}
    found: dict[str, str] = {}
    for name in ENV_OVERRIDES:
        path = Path(directory) / name
        try:
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(f"credential {name}", str(path), f"cannot be read: {getattr(exc, 'strerror', None) or exc}"))
            continue
        if value:
            found[name] = value
    return found


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    return lambda value: None if value in choices else f"must be one of: {', '.join(choices)}"


def _names(value: list[Any]) -> str | None:
    if any(not isinstance(v, str) or not v.strip() for v in value):
        return "must be a list of non-empty strings"
    return None


def _email_domains(value: list[Any]) -> str | None:
    why = _names(value)
    if why:
        return why
    for entry in value:
        if "@" in entry:
            return f"{entry!r}: give the domain only, without '@' (e.g. {entry.rsplit('@', 1)[-1]!r})"
        if not HOST_PORT.match(entry) or ":" in entry:
            return f"{entry!r} is not a domain name"
    return None


def _source_list(value: Any) -> tuple[list[str], str | None]:
    """`from` of a field: one source or a list of them, each a profile path or a computed source."""
    sources = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    if not sources or any(not isinstance(s, str) for s in sources):
        return [], "must be a profile path or a list of them, e.g. \"given_name\" or [\"user_metadata.company\", \"app_metadata.company\"]"
    for source in sources:
        why = source_problem(source)
        if why:
            fixed = " (a fixed value is written { value = \"...\" }, or { from = ..., default = \"...\" })" if " " in source or source[:1] in "'\"" else ""
            return [], f"{source!r}: {why}{fixed}"
    return sources, None


def parse_lead_field(name: str, value: Any) -> tuple[FieldMapping | None, str | None]:
    """One `[lead.fields]` entry -> (its mapping, or None to leave the field out; why it is wrong)."""
    key = f"lead.fields.{name}"
    if value is False:
        return None, None
    if isinstance(value, (str, list)):
        sources, why = _source_list(value)
        return (FieldMapping(name, tuple(sources), key=key), None) if not why else (None, why)
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"from", "default", "value"})
        if unknown:
            return None, f"unknown key {', '.join(unknown)} (a field takes from, default, or value)"
        if "value" in value:
            if set(value) != {"value"}:
                return None, "value is a fixed value for every lead; it cannot be combined with from or default"
            fixed = value["value"]
            if not isinstance(fixed, (str, bool, int, float)):
                return None, "value must be a string, number or true/false"
            return FieldMapping(name, (), fixed, key=key), None
        if "from" not in value and "default" not in value:
            return None, "give from (profile paths), default, or value"
        sources: list[str] = []
        if "from" in value:
            sources, why = _source_list(value["from"])
            if why:
                return None, f"from: {why}"
        default = value.get("default")
        if default is not None and not isinstance(default, (str, bool, int, float)):
            return None, "default must be a string, number or true/false"
        return FieldMapping(name, tuple(sources), default, key=key), None
    return None, (
        "must be a profile path (\"given_name\"), a list of them tried in order, "
        "{ from = ..., default = \"...\" }, { value = \"...\" }, or false to leave the field out"
    )


def _resolve(path: str, base: Path | None) -> Path:
    candidate = Path(path).expanduser()
    if not candidate.is_absolute() and base is not None:
        candidate = base / candidate
    return candidate


# --- loading ----------------------------------------------------------------------------------


def load(path: Path, environ: Mapping[str, str] | None = None, *, require_secrets: bool = True) -> Config:
    """Read `path` and the environment. Raises ConfigError listing every problem.

    `require_secrets=False` is for commands that never call a vendor (`status`, `retry`,
    `reset-checkpoint`): an operator can run them without the service's secrets, and with a file
    that names no vendor at all (any vendor value it does hold is still checked)."""
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from a Windows editor is not TOML's business
    except FileNotFoundError:
        raise ConfigError([Problem("--config", str(path), "file not found (copy config.toml from the project and edit it)")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem("--config", str(path), f"cannot be read: {exc}")]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(str(path), None, f"is not valid TOML: {exc}")]) from None
    return parse(raw, environ=environ, base=path.resolve().parent, source=path, require_secrets=require_secrets)


def parse(
    raw: Mapping[str, Any],
    *,
    environ: Mapping[str, str],
    base: Path | None = None,
    source: Path | None = None,
    require_secrets: bool = True,
) -> Config:
    problems: list[Problem] = []
    reader = _Reader(raw, problems)
    known_sections = {"auth0", "salesforce", "schedule", "state", "http", "work", "logging", "metrics", "lead"}
    for name in sorted(set(raw) - known_sections):
        problems.append(Problem(f"[{name}]", None, f"unknown section (known: {', '.join(sorted(known_sections))})"))

    merged = {name: dict(raw.get(name, {})) if isinstance(raw.get(name, {}), dict) else raw.get(name) for name in known_sections}
    env_for: dict[str, str] = {}
    overridden: dict[str, str] = {}  # key -> where its value came from, when not the file
    credentials = read_credentials(environ, problems)
    for variable, (section, key) in ENV_OVERRIDES.items():
        env_for[f"{section}.{key}"] = variable
        value = environ.get(variable) or credentials.get(variable)  # the environment wins
        if value and isinstance(merged.get(section), dict):
            merged[section][key] = value
            overridden[f"{section}.{key}"] = f"the environment variable {variable}" if environ.get(variable) else f"the credential file {variable}"
    reader.raw = merged

    a = reader.section("auth0", {"domain", "client_id", "client_secret", "start_from", "login_types", "rate_limit_buckets"})
    auth0 = Auth0Config(
        domain=reader.get(a, "auth0.domain", str, "", check_domain),
        client_id=reader.get(a, "auth0.client_id", str, ""),
        client_secret=reader.get(a, "auth0.client_secret", str, ""),
        start_from=reader.get(a, "auth0.start_from", str, "now", check_start_from),
        login_types=tuple(reader.get(a, "auth0.login_types", list, list(DEFAULT_LOGIN_TYPES), check_login_types)),
        rate_limit_buckets=reader.get(a, "auth0.rate_limit_buckets", str, "per_endpoint", _one_of("per_endpoint", "global")),
    )
    required = ("domain", "client_id", "client_secret") if require_secrets else ()
    for key in required:
        reader.require(getattr(auth0, key), f"auth0.{key}", env_for.get(f"auth0.{key}"))

    s = reader.section(
        "salesforce",
        {"domain", "client_id", "client_secret", "company", "api_version", "lead_source", "on_duplicate", "external_id_field"},
    )

    def api_version(value: str) -> str | None:
        if value.lower().startswith("v"):
            return f"write the number without 'v', e.g. \"{value[1:]}\""
        if not API_VERSION.match(value):
            return "must look like \"59.0\""
        if float(value) < MIN_API_VERSION:
            return f"must be {MIN_API_VERSION:.1f} or later: lead-poller writes leads with sObject Collections upserts and the duplicate rule header"
        return None

    def field_name(value: str) -> str | None:
        return None if value == "" or SF_FIELD_NAME.match(value) else "must be a Salesforce field API name, e.g. Auth0_User_Id__c"

    external_id = reader.get(s, "salesforce.external_id_field", str, "", field_name)
    salesforce = SalesforceConfig(
        domain=reader.get(s, "salesforce.domain", str, "", check_salesforce_domain),
        client_id=reader.get(s, "salesforce.client_id", str, ""),
        client_secret=reader.get(s, "salesforce.client_secret", str, ""),
        company=reader.get(s, "salesforce.company", str, "", lambda v: None if v == "" or v.strip() else "must not be blank: Salesforce refuses a lead without a Company"),
        api_version=reader.get(s, "salesforce.api_version", str, "59.0", api_version),
        lead_source=reader.get(s, "salesforce.lead_source", str, "Auth0"),
        on_duplicate=reader.get(s, "salesforce.on_duplicate", str, "adopt", _one_of("adopt", "allow_save", "skip")),
        external_id_field=external_id or None,
    )
    for key in ("domain", "client_id", "client_secret", "company") if require_secrets else ():
        reader.require(getattr(salesforce, key), f"salesforce.{key}", env_for.get(f"salesforce.{key}"))

    sc = reader.section("schedule", {"interval_seconds", "cycle_deadline_seconds", "watchdog_intervals"})
    schedule = ScheduleConfig(
        interval_seconds=float(reader.get(sc, "schedule.interval_seconds", (int, float), 300, _between(1, 7 * DAY))),
        cycle_deadline_seconds=float(reader.get(sc, "schedule.cycle_deadline_seconds", (int, float), 0, _between(0, 7 * DAY))),
        watchdog_intervals=float(reader.get(sc, "schedule.watchdog_intervals", (int, float), 3, _between(2, 1000))),
    )
    if not any(p.key.startswith("schedule.") for p in problems):
        # The daemon's watchdog must let the longest cycle finish and the next one start; otherwise
        # it would kill healthy cycles.
        needed = schedule.deadline_seconds + schedule.interval_seconds
        if schedule.watchdog_intervals * schedule.interval_seconds < needed:
            problems.append(Problem(
                "schedule.watchdog_intervals", f"{schedule.watchdog_intervals:g}",
                f"{schedule.watchdog_intervals:g} × interval_seconds = {schedule.watchdog_intervals * schedule.interval_seconds:g} s is shorter "
                f"than a cycle may run (cycle_deadline_seconds {schedule.deadline_seconds:g} s, then the next interval): "
                f"the daemon would stop its own cycles; use at least {math.ceil(needed / schedule.interval_seconds)}, or a shorter deadline",
            ))

    st = reader.section("state", {"path"})
    state_path = reader.get(st, "state.path", str, "", lambda v: None if v.strip() else "must not be empty")
    state_directory = environ.get("STATE_DIRECTORY", "").split(":")[0]
    if not state_path and state_directory and not any(p.key == "state.path" for p in problems):
        state_path = str(Path(state_directory) / "state.db")  # systemd's StateDirectory=, one per unit
    if not state_path:
        problems.append(Problem("state.path", None, "is required: where the state database lives, e.g. \"/var/lib/lead-poller/state.db\""))
    state = StateConfig(path=_resolve(state_path or ".", base))

    h = reader.section("http", {"ca_bundle", "timeout_seconds", "connect_timeout_seconds"})
    ca_bundle = reader.get(h, "http.ca_bundle", str, "")
    ca_path = _resolve(ca_bundle, base) if ca_bundle else None
    if ca_path is not None:
        why = check_ca_bundle(ca_path)
        if why:
            problems.append(Problem("http.ca_bundle", toml_value(ca_bundle), why))
    http = HttpConfig(
        ca_bundle=ca_path,
        timeout_seconds=float(reader.get(h, "http.timeout_seconds", (int, float), 30, _between(0, 3600, above=True))),
        connect_timeout_seconds=float(reader.get(h, "http.connect_timeout_seconds", (int, float), 10, _between(0, 600, above=True))),
    )

    w = reader.section("work", {"max_attempts", "backoff_base_seconds", "backoff_cap_seconds", "concurrency", "batch_profile_reads"})
    work = WorkConfig(
        max_attempts=reader.get(w, "work.max_attempts", int, 8, _between(1, 1000)),
        backoff_base_seconds=float(reader.get(w, "work.backoff_base_seconds", (int, float), 60, _between(0, 7 * DAY, above=True))),
        backoff_cap_seconds=float(reader.get(w, "work.backoff_cap_seconds", (int, float), 6 * 3600, _between(0, 30 * DAY, above=True))),
        concurrency=reader.get(w, "work.concurrency", int, 4, lambda v: None if 1 <= v <= 32 else "must be between 1 and 32"),
        batch_profile_reads=reader.get(w, "work.batch_profile_reads", bool, True),
    )

    lg = reader.section("logging", {"level", "pii"})
    logging = LoggingConfig(
        level=reader.get(lg, "logging.level", str, "info", _one_of("debug", "info", "warning", "error")),
        pii=reader.get(lg, "logging.pii", str, "mask", _one_of("mask", "hash", "plain")),
    )

    m = reader.section("metrics", {"listen"})
    listen = reader.get(m, "metrics.listen", str, "", check_listen)
    metrics = MetricsConfig(listen=parse_listen(listen) if listen else None)

    lead = _parse_lead(reader, salesforce)

    if problems:
        # A value that came from the environment is not in the file: say where it came from.
        problems[:] = [
            Problem(p.key, p.value, f"{p.why} (this value comes from {overridden[p.key]})") if p.key in overridden and p.value is not None else p
            for p in problems
        ]
        raise ConfigError(problems, source=str(source) if source else "configuration")
    return Config(
        auth0=auth0, salesforce=salesforce, schedule=schedule, state=state, http=http, work=work, logging=logging, metrics=metrics, source=source, lead=lead
    )


LIST_KEYS = (
    "allow_applications",
    "deny_applications",
    "allow_connections",
    "deny_connections",
    "allow_email_domains",
    "deny_email_domains",
)


def _parse_lead(reader: _Reader, salesforce: SalesforceConfig) -> LeadConfig:
    problems = reader.problems
    ld = reader.section("lead", {"fields", "consent", "require_verified_email", "skip_existing_contacts", *LIST_KEYS})

    def path(value: str) -> str | None:
        return "must be a profile path" if value in COMPUTED_SOURCES else source_problem(value)

    lists: dict[str, tuple[str, ...]] = {}
    for key in LIST_KEYS:
        check = _email_domains if key.endswith("email_domains") else _names
        lists[key] = tuple(v.strip() for v in reader.get(ld, f"lead.{key}", list, [], check))
    for kind in ("applications", "connections", "email_domains"):
        both = {v.casefold() for v in lists[f"allow_{kind}"]} & {v.casefold() for v in lists[f"deny_{kind}"]}
        if both:
            problems.append(Problem(f"lead.deny_{kind}", None, f"{', '.join(sorted(both))} is in both allow_{kind} and deny_{kind}"))

    fields: list[tuple[str, FieldMapping | None]] = []
    raw_fields = ld.get("fields", {})
    if not isinstance(raw_fields, dict):
        problems.append(Problem("[lead.fields]", toml_value(raw_fields), "must be a table: one line per Lead field, e.g. Title = \"user_metadata.job_title\""))
        raw_fields = {}
    seen: dict[str, str] = {}
    for name, value in raw_fields.items():
        key = f"lead.fields.{name}"
        if not SF_FIELD_NAME.match(name):
            problems.append(Problem(key, None, "is not a Salesforce field API name (letters, digits and _, e.g. Plan__c)"))
            continue
        if name.lower() in seen:
            problems.append(Problem(key, None, f"names the same field as lead.fields.{seen[name.lower()]} (API names are case-insensitive)"))
            continue
        seen[name.lower()] = name
        if name.lower() in FIXED_FIELDS:
            problems.append(Problem(key, None, "Email is always the user's email address: lead-poller finds existing leads and contacts by it"))
            continue
        if salesforce.external_id_field and name.lower() == salesforce.external_id_field.lower():
            problems.append(Problem(key, None, "is the [salesforce] external_id_field, which always holds the Auth0 user id"))
            continue
        mapping, why = parse_lead_field(name, value)
        if why:
            problems.append(Problem(key, _shown(key, value), why))
            continue
        if mapping is None and name.lower() in ("lastname", "company"):
            problems.append(Problem(key, "false", f"{name} is required on every Lead and cannot be left out"))
            continue
        fields.append((name, mapping))

    return LeadConfig(
        fields=tuple(fields),
        consent=reader.get(ld, "lead.consent", str, "", path) or None,
        require_verified_email=reader.get(ld, "lead.require_verified_email", bool, False),
        skip_existing_contacts=reader.get(ld, "lead.skip_existing_contacts", bool, False),
        **lists,
    )
