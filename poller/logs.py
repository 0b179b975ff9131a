"""One log pipeline for our events and for third-party loggers, rendered once.

JSON lines on stdout when stdout is not a terminal (journald collects them), a readable console on a
terminal. Two processors stand between every event and the output:

- `redact`: secrets never leave the process. Keys that name a secret, known secret values (the
  configured client secrets, every token we obtained), and `Bearer ...` strings are replaced.
- `protect_personal_data`: emails and IP addresses are masked (or hashed) by default, in named fields
  and inside free text such as a vendor's error message. User ids stay, so support can find a case.

Logging must never take the daemon down: the processors tolerate any value (one whose `repr` raises
becomes `<unrepresentable>`), rendering falls back to `repr` for anything JSON cannot hold, a
third-party message whose arguments cannot be formatted is still logged, and long text is cut
(journald splits lines longer than 48 KiB, which would break the JSON). Exceptions are structured
fields (`exception`: type, value, frames), without local variables: they would hold profiles and
tokens.

Nor must a closed output: when the reader goes away (`lead-poller --run-once | head -1`), the log
goes quiet instead of raising or printing `--- Logging error ---` dumps, and the stream's descriptor
is pointed at /dev/null so later writes and the flush at exit do not fail either: the cycle carries
on and the exit code is its own.

A fatal error is reported by `report_fatal`: one line for a person on stderr and, when the log is
JSON lines on a stream of its own (stdout under journald or cron), one structured `fatal` line in it.
Every line for a person (that one, `check`'s report) goes through `for_person`: the same redaction
and masking as the log, so a vendor's detail quoted in an error is no way around them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
import sys
import threading
from typing import Any, Iterable, MutableMapping, TextIO
from urllib.parse import quote, quote_plus

import structlog
import structlog.tracebacks

SECRET_KEY = re.compile(r"(secret|token|authorization|password|session_id|signature|cookie)", re.IGNORECASE)
PERSONAL_KEYS = frozenset({"email", "ip", "user_name", "emails"})
# A match may only start where a run of address characters starts, and never gives back what it took
# before the "@": linear time, so a long vendor answer cannot stall logging (an unanchored pattern
# is quadratic on a long run of letters).
# The local part is RFC 5322's atext and dots (jane#smith@, o'brien@, a/b=c@ are all addresses; a
# narrower class would leak what comes before its first odd character); a quoted local part
# ("john doe"@corp.com) is not recognised (the README says so). \w is Unicode-aware: jürgen@bücher.de
# is an address too. Possessive, and the domain's characters are all atext, so a match can only start
# at the start of a run: a long value stays linear.
_ATEXT = r"\w.!#$%&'*+/=?^`{|}~\-"
EMAIL_IN_TEXT = re.compile(rf"(?<![{_ATEXT}])[{_ATEXT}]++@[\w.\-]+\.[^\W\d_]{{2,}}")
IPV4_IN_TEXT = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
# Candidates with two or more colons; only those ipaddress accepts are masked (not 12:34:56).
IPV6_CANDIDATE = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}(?![\w:])")
# Everything up to a space, a quote, a backslash (JSON escaping) or a closing bracket or separator:
# a token in the wild may hold characters RFC 6750 does not allow ($, %, ...), and none of it may leak.
BEARER = re.compile(r"\b(Bearer|OAuth)\s+[^\s\"'\\<>()\[\]{},;]+", re.IGNORECASE)
# A form or query string that a vendor echoes back (an HTML error page quoting the token request):
# the value of a credential parameter goes, whether or not it is a value we know.
FORM_SECRET = re.compile(r"\b(client_secret|client_assertion|password|access_token|refresh_token|id_token|assertion)=[^&\s\"'<>]+", re.IGNORECASE)
REDACTED = "[redacted]"
MAX_TEXT = 4000  # characters kept of any one string value
# ProcessorFormatter's own bookkeeping keys: not log content.
_META_KEYS = frozenset({"_record", "_from_structlog"})
THIRD_PARTY = ("apscheduler", "httpx", "httpcore", "urllib3", "simple_salesforce", "requests", "auth0")


class _Secrets:
    """Values to scrub from any output: configured secrets and every token obtained at run time."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: str | None) -> None:
        if value and len(value) >= 6:  # short values would scrub ordinary words
            # As sent in a form (percent-encoded) and inside JSON (escaped), a vendor may echo it so.
            forms = {value, quote_plus(value), quote(value, safe=""), json.dumps(value)[1:-1]}
            with self._lock:
                self._values.update(forms)

    def scrub(self, text: str) -> str:
        # Longest first: a value that contains another is replaced whole, not around the shorter one.
        for value in sorted(tuple(self._values), key=len, reverse=True):
            if value in text:
                text = text.replace(value, REDACTED)
        text = FORM_SECRET.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
        return BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


secrets = _Secrets()


def register_secret(value: str | None) -> None:
    """Tell the log pipeline about a secret (a token just obtained, a client secret)."""
    secrets.add(value)


def mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    host, dot, tld = domain.rpartition(".")
    return f"{local[:1]}***@{host[:1]}***{dot}{tld}" if dot else f"{local[:1]}***@***"


def mask_ip(text: str) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return "***"
    if address.version == 4:
        a, b, _, _ = text.split(".")
        return f"{a}.{b}.x.x"
    groups = address.exploded.split(":")
    return f"{groups[0]}:{groups[1]}::x"


def _hash(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


class PersonalData:
    """Masks, hashes or leaves personal data, per `[logging] pii`."""

    def __init__(self, mode: str = "mask") -> None:
        self.mode = mode

    def value(self, key: str, value: Any) -> Any:
        if self.mode == "plain" or value is None:
            return value
        if isinstance(value, (list, tuple)):
            return [self.value(key, v) for v in value]
        text = str(value)
        if self.mode == "hash":
            return _hash(text)
        if "@" in text:
            return mask_email(text)
        if key == "ip":
            return mask_ip(text)
        return text[:1] + "***"

    def text(self, text: str) -> str:
        if self.mode == "plain":
            return text
        replace_email = _hash if self.mode == "hash" else mask_email
        text = EMAIL_IN_TEXT.sub(lambda m: replace_email(m.group(0)), text)
        replace_ip = _hash if self.mode == "hash" else mask_ip

        def masked(match: re.Match[str], *, unparsed: str | None) -> str:
            # A loopback address names this machine, never a person: a host:port quoted in an
            # error (a local proxy, the sandbox) stays readable. `unparsed`: what stands for a
            # candidate that is no address (an IPv6 look-alike such as 12:34:56 stays itself).
            address = _ip_or_none(match.group(0))
            if address is None:
                return match.group(0) if unparsed is None else unparsed
            return match.group(0) if address.is_loopback else replace_ip(match.group(0))

        text = IPV6_CANDIDATE.sub(lambda m: masked(m, unparsed=None), text)
        return IPV4_IN_TEXT.sub(lambda m: masked(m, unparsed=replace_ip(m.group(0))), text)


def _ip_or_none(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


_personal = PersonalData()


def for_person(text: str) -> str:
    """A line for a person (stderr, `check`'s report) as the log would show it: secrets redacted and
    personal data masked per `[logging] pii`, by the same functions as every log field. Not cut: a
    person's line is short, or it is a list of problems that must all be read."""
    try:
        return _personal.text(secrets.scrub(str(text)))
    except Exception:  # never the reason a fatal error goes unreported
        return "<unrepresentable>"


def _safe_text(text: str) -> str:
    """Secrets scrubbed (on the whole text: a cut must not leave half a secret the scrubber no longer
    knows), personal data masked, and the result cut to MAX_TEXT characters."""
    length = len(text)
    text = secrets.scrub(text)[: 2 * MAX_TEXT]  # bounds the masking work; the cut below is the real one
    text = _personal.text(text)
    return text if length <= MAX_TEXT else f"{text[:MAX_TEXT]}...[{length - MAX_TEXT} more characters]"


def _clean(key: str, value: Any, depth: int = 0) -> Any:
    if SECRET_KEY.search(key) and key not in ("token_type",):
        return REDACTED if value not in (None, "") else value
    if key in PERSONAL_KEYS:
        return _personal.value(key, value)
    if isinstance(value, str):
        return _safe_text(value)
    if isinstance(value, dict) and depth < 5:
        return {_safe_text(str(k)): _clean_or_placeholder(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and depth < 5:
        return [_clean_or_placeholder(key, v, depth + 1) for v in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return _safe_text(repr(value))


def _clean_or_placeholder(key: str, value: Any, depth: int) -> Any:
    try:
        return _clean(key, value, depth)
    except Exception:  # a value whose __repr__ itself fails
        return "<unrepresentable>"


def protect(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: redact secrets and mask personal data in every field, never raising."""
    for key in list(event_dict):
        if key not in _META_KEYS:
            event_dict[key] = _clean_or_placeholder(key, event_dict[key], 0)
    return event_dict


class _SafeMessage(logging.Filter):
    """A third-party record whose message cannot be formatted (an argument's `__str__` raises, a
    wrong `%` format) is logged with what can be said, instead of a `--- Logging error ---` dump."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):
            return True  # one of ours: structlog's event dict, rendered by the processors
        try:
            record.getMessage()
        except Exception as exc:
            try:
                template = str(record.msg)
            except Exception:
                template = "<unrepresentable>"
            record.msg, record.args = "%s (the log message could not be formatted: %s)", (template, type(exc).__name__)
        return True


def _json_default(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return "<unrepresentable>"


def reader_gone(stream: Any) -> None:
    """Point the descriptor under `stream` at /dev/null: its reader is gone, and the writes still to
    come (a print, the buffer flushed at exit) must not fail on it too."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file (a closed or in-memory buffer): the handler's flag is enough
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, fd)
    except OSError:
        pass
    finally:
        os.close(devnull)


def _is_gone(stream: Any, error: BaseException | None) -> bool:
    if isinstance(error, (BrokenPipeError, ConnectionResetError)):
        return True
    return isinstance(error, ValueError) and bool(getattr(stream, "closed", False))  # "I/O operation on closed file"


class _StreamHandler(logging.StreamHandler):
    """A StreamHandler that never raises and never dumps a traceback.

    The stream's reader gone (EPIPE, a closed file): the handler goes quiet for good and the stream's
    descriptor is pointed at /dev/null (see the module docstring). Any other failure to write one
    line costs that line and one short notice on stderr."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.gone = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.gone:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if _is_gone(self.stream, error):
            self.gone = True
            reader_gone(self.stream)
            return
        try:
            if sys.stderr is not None and sys.stderr is not self.stream:
                sys.stderr.write(f"lead-poller: a log line could not be written ({type(error).__name__})\n")
                sys.stderr.flush()
        except Exception:
            pass


class _Output:
    """Where the log currently goes, for `report_fatal`."""

    stream: Any = None
    json_lines: bool = False


_output = _Output()


def configure(*, level: str = "info", pii: str = "mask", secret_values: Iterable[str] = (), stream: TextIO | None = None, json_lines: bool | None = None) -> None:
    """Set up structlog and the stdlib root logger to share one pipeline. Safe to call again."""
    stream = stream or sys.stdout
    _personal.mode = pii
    for value in secret_values:
        register_secret(value)
    if json_lines is None:
        try:
            json_lines = not stream.isatty()
        except (OSError, ValueError):  # a closed stream
            json_lines = True
    # No handler of the stdlib may print a `--- Logging error ---` traceback either.
    logging.raiseExceptions = False
    _output.stream, _output.json_lines = stream, json_lines

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        (
            structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False, max_frames=20))
            if json_lines
            else structlog.processors.format_exc_info
        ),
        protect,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=json.dumps, default=_json_default, ensure_ascii=False)
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = _StreamHandler(stream)
    handler.addFilter(_SafeMessage())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared[:-1] + [structlog.stdlib.ExtraAdder(), protect],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Third-party loggers speak only when something is wrong; httpx at INFO would log every URL.
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))


def get_logger(name: str = "lead-poller") -> Any:
    return structlog.get_logger(name)


def _say(stream: Any, text: str) -> None:
    """Write one line for a person; a reader that is gone is not an error of ours."""
    try:
        stream.write(text + "\n")
        stream.flush()
    except Exception as exc:
        if _is_gone(stream, exc):
            reader_gone(stream)


def report_fatal(prefix: str, message: str, *, code: str, exit_code: int, summary: str | None = None, **fields: Any) -> int:
    """Report what stopped the program, once, and return its exit code.

    A person gets one line on stderr (`lead-poller: ...`, every problem listed for a configuration).
    When the log is JSON lines on a stream other than stderr (stdout, collected by journald or a
    cron log), it also gets one structured `fatal` line (`code`, `exit_code`, `error`) for alerts. On
    a terminal, or when the log itself is on stderr (`status`, `check`, `retry`, `reset-checkpoint`,
    a dry run), the person's line is all: the same error twice in two formats helps nobody.
    `summary` replaces `message` as the structured line's `error` (the problems of a configuration
    are a field of their own there)."""
    if _output.json_lines and _output.stream is not None and _output.stream is not sys.stderr:
        get_logger("poller").error("fatal", code=code, exit_code=int(exit_code), error=summary or message, **fields)
    _say(sys.stderr, f"{prefix}: {for_person(message)}")
    return int(exit_code)
