"""What can go wrong, named after what the caller does next.

    PollerError
    ├── ConfigError           the configuration is invalid: fix it (exit 78, nothing was called)
    ├── FatalError            stop the cycle; a person must act (credentials, permissions, state)
    │   ├── CredentialsError  a vendor rejected our credentials or scopes (exit 77)
    │   ├── LeadMappingError  [lead.fields] does not fit the org's Lead object (exit 78)
    │   ├── StateError        the state database is corrupt or from a newer version (exit 65)
    │   └── StateLocked       another lead-poller holds the state database (exit 73)
    ├── RetriableError        try again later; `delay` says when at the earliest
    │   ├── DailyLimitReached Salesforce's daily API allowance is spent: no more writes this cycle
    │   └── Interrupted       the cycle is stopping (SIGTERM, deadline): the user simply waits
    └── PermanentError        this user cannot succeed as is: record `code` (and `field`), move on

Adapters translate every vendor response into one of these at their boundary (see the tables in
`auth0_source.py` and `salesforce_sink.py`); nothing above them sees a vendor exception.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass


class ExitCode(enum.IntEnum):
    """Process exit codes (sysexits.h values where one fits), documented in the README."""

    OK = 0
    ERROR = 1  # anything unexpected: a bug; the traceback is logged
    STATE = 65  # EX_DATAERR: the state database cannot be used as it is
    STALLED = 70  # EX_SOFTWARE: the daemon's watchdog saw no cycle complete in time
    LOCKED = 73  # EX_CANTCREAT: another process holds the state database
    TEMPORARY = 75  # EX_TEMPFAIL: some users were left pending by temporary errors; run again later
    CREDENTIALS = 77  # EX_NOPERM: credentials rejected or a scope/permission missing
    CONFIG = 78  # EX_CONFIG: invalid configuration


class PollerError(Exception):
    exit_code: ExitCode = ExitCode.ERROR


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration: where, what was given, and why it is wrong."""

    key: str
    value: str | None
    why: str

    def __str__(self) -> str:
        shown = "" if self.value is None else f" = {self.value}"
        return f"{self.key}{shown}: {self.why}"


def toml_value(value: object) -> str:
    """A configuration value as it is written in config.toml (`true`, `"60"`, `["s", "f"]`), so a
    problem shows what the person typed rather than Python's spelling of it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    return repr(value)


class ConfigError(PollerError):
    exit_code = ExitCode.CONFIG

    def __init__(self, problems: list[Problem], source: str = "configuration") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"invalid {source}: {len(problems)} {noun}\n{lines}")


class FatalError(PollerError):
    """Stop the cycle. The message is the one line a person reads to fix it."""

    def __init__(self, message: str, *, code: str = "fatal", exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        self.code = code
        if exit_code is not None:
            self.exit_code = exit_code


class CredentialsError(FatalError):
    exit_code = ExitCode.CREDENTIALS


class LeadMappingError(FatalError):
    """The lead mapping does not fit the Salesforce org (checked against its Lead describe at start and
    at each daily refresh). A configuration problem that needs the org to be seen, hence fatal, exit 78."""

    exit_code = ExitCode.CONFIG

    def __init__(self, problems: list[Problem], org: str) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"the lead mapping does not fit the Lead object of {org}: {len(problems)} {noun}\n{lines}", code="lead_mapping_invalid")


class StateError(FatalError):
    exit_code = ExitCode.STATE


class StateLocked(FatalError):
    exit_code = ExitCode.LOCKED


class RetriableError(PollerError):
    """Temporary: the same call may succeed later. `delay` is the earliest sensible retry, in seconds."""

    exit_code = ExitCode.TEMPORARY

    def __init__(self, message: str, *, code: str, delay: float = 0.0, counts_as_attempt: bool = True, can_fail: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.delay = delay
        # False for waits that say nothing about the user (rate limits, a spent daily allowance,
        # a stop request): the user waits without using up one of its attempts.
        self.counts_as_attempt = counts_as_attempt
        # False for an outage (5xx, timeouts, a network that is down): the backoff grows as for any
        # retry, but however long it lasts, nobody becomes `failed` because of it.
        self.can_fail = can_fail


class DailyLimitReached(RetriableError):
    """Salesforce REQUEST_LIMIT_EXCEEDED: the org's rolling 24 h API allowance is spent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="salesforce_daily_limit", delay=3600.0, counts_as_attempt=False)


class Interrupted(RetriableError):
    """The cycle is stopping (a stop request or its deadline) while a call waited for its turn."""

    def __init__(self) -> None:
        super().__init__("interrupted: the cycle is stopping", code="interrupted", counts_as_attempt=False)


class PermanentError(PollerError):
    """This user's record cannot succeed as it is (a validation error, a missing user)."""

    def __init__(self, message: str, *, code: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
