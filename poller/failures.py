"""The vendor-response -> what-we-do table, kept as data in one place.

Each adapter classifies a failed call by (api, operation, HTTP status, vendor error code) and gets a
`Rule`: what happens next, the code recorded in the ledger, and the one line a person reads. The
README's "Failure behaviour" table is generated from `RULES` (`python -m poller.failures`), and a
test keeps the two in step.

Lookup takes the most specific row: an exact vendor code beats a status, an exact operation beats
`*`, an exact status beats a status class (`5xx`).
"""

from __future__ import annotations

import enum
import ssl
from dataclasses import dataclass

from poller.errors import ExitCode


class Next(enum.Enum):
    RETRY = "retry later (backoff; counts as an attempt)"
    # An outage says nothing about the user: however long it lasts, nobody fails because of it.
    OUTAGE = "retry later (backoff; never fails the user)"
    WAIT = "wait, then retry (never counts as an attempt)"
    REFRESH = "fetch a new token once, then retry"
    PERMANENT = "record the code; this user is not retried"
    FATAL = "stop the cycle"
    DAILY_LIMIT = "stop Salesforce writes this cycle; users stay pending"
    NOT_FOUND = "look for a linked primary user, else record user_not_found"
    DUPLICATE = "per [salesforce] on_duplicate"


@dataclass(frozen=True)
class Rule:
    api: str  # auth0 | salesforce
    # token | logs | user_read | user_write | user_search | lead_lookup | contact_lookup | lead_describe |
    # lead_batch (the whole Collections call) | lead_write (one record's result inside it) |
    # log_search (the dated search behind start_from and backfill --since) | *
    operation: str
    status: str  # "429", "5xx", "*", "timeout", "connection", "tls" (the server's certificate is not trusted)
    vendor_code: str | None  # errorCode / statusCode in the body, when it matters
    next: Next
    code: str  # what the ledger and the logs record
    explanation: str  # what the user sees / should do

    @property
    def exit_code(self) -> ExitCode:
        """The process exit code of a --run-once cycle that ends with this answer."""
        if self.next is Next.FATAL or self.next is Next.REFRESH:  # REFRESH: when the new token is refused too
            return FATAL_EXIT_CODES.get(self.code, ExitCode.CREDENTIALS if self.code in CREDENTIAL_CODES else ExitCode.ERROR)
        if self.next in (Next.RETRY, Next.OUTAGE, Next.WAIT, Next.DAILY_LIMIT):
            return ExitCode.TEMPORARY
        return ExitCode.OK


CREDENTIAL_CODES = frozenset(
    {"auth0_credentials_rejected", "auth0_forbidden", "auth0_token_rejected", "salesforce_credentials_rejected", "salesforce_forbidden", "salesforce_session_rejected", "salesforce_contacts_unreadable"}
)
# Fatal answers that are not about credentials: a person fixes the state or the configuration.
FATAL_EXIT_CODES = {
    "auth0_checkpoint_rejected": ExitCode.STATE,
    "auth0_log_search_rejected": ExitCode.CONFIG,
    "salesforce_external_id_missing": ExitCode.CONFIG,
    "salesforce_invalid_query": ExitCode.CONFIG,
    "salesforce_describe_missing": ExitCode.CONFIG,
    # Trust is set-up (the system store, or [http] ca_bundle): restarting cannot fix it, and under
    # systemd RestartPreventExitStatus=78 stops the restart loop as for any configuration error.
    "auth0_tls_untrusted": ExitCode.CONFIG,
    "salesforce_tls_untrusted": ExitCode.CONFIG,
}

R = Rule
RULES: tuple[Rule, ...] = (
    # --- Auth0 ------------------------------------------------------------------------------
    R("auth0", "token", "401", None, Next.FATAL, "auth0_credentials_rejected", "Auth0 rejected the client id/secret: check AUTH0_CLIENT_ID / AUTH0_CLIENT_SECRET"),
    R("auth0", "token", "403", None, Next.FATAL, "auth0_credentials_rejected", "the application is not authorised for the Management API: add a client grant for https://DOMAIN/api/v2/"),
    R("auth0", "token", "429", None, Next.WAIT, "auth0_rate_limited", "token endpoint rate-limited: wait for Retry-After / x-ratelimit-reset"),
    R("auth0", "token", "5xx", None, Next.OUTAGE, "auth0_unavailable", "Auth0 is unavailable: retried next cycle"),
    R("auth0", "*", "429", None, Next.WAIT, "auth0_rate_limited", "rate limit: wait until x-ratelimit-reset (or Retry-After), then continue; users never fail because of it"),
    R("auth0", "*", "401", None, Next.REFRESH, "auth0_token_rejected", "token expired or revoked: a new token is fetched once (once for all the calls the same token failed); a second 401 stops the cycle"),
    R("auth0", "*", "403", None, Next.FATAL, "auth0_forbidden", "a scope is missing: grant read:logs, read:users and update:users_app_metadata to the application"),
    R("auth0", "log_search", "400", None, Next.FATAL, "auth0_log_search_rejected", "Auth0 refused the dated log search behind start_from or backfill --since: check the time given"),
    R("auth0", "logs", "400", None, Next.FATAL, "auth0_checkpoint_rejected", "Auth0 rejected the stored checkpoint as malformed; nothing was skipped: `lead-poller reset-checkpoint` (optionally --to a log_id) and run again"),
    R("auth0", "user_read", "404", None, Next.NOT_FOUND, "user_not_found", "the log's user id may be a linked secondary identity: its primary user is looked up, else user_not_found is recorded"),
    R("auth0", "user_write", "404", None, Next.NOT_FOUND, "user_not_found", "a linked secondary identity: the flag is written on its primary user; if there is none (deleted), user_not_found is recorded and the lead stays"),
    R("auth0", "user_read", "400", None, Next.PERMANENT, "auth0_bad_user_id", "Auth0 refused the user id"),
    R("auth0", "user_write", "400", None, Next.PERMANENT, "auth0_write_back_rejected", "Auth0 refused the app_metadata write"),
    R("auth0", "user_search", "404", None, Next.NOT_FOUND, "user_not_found", "the API has no user search (Auth0 itself never answers it 404): batched reads fall back to per-user reads, and a linked identity's primary cannot be looked up, so user_not_found is recorded (re-checked on the next login)"),
    R("auth0", "user_search", "400", None, Next.RETRY, "auth0_search_rejected", "user search refused the query; per-user reads are used instead"),
    R("auth0", "*", "5xx", None, Next.OUTAGE, "auth0_unavailable", "Auth0 answered 5xx: retried with backoff, however long it lasts"),
    R("auth0", "*", "timeout", None, Next.OUTAGE, "auth0_timeout", "no answer within [http] timeout_seconds: retried with backoff"),
    R("auth0", "*", "connection", None, Next.OUTAGE, "auth0_unreachable", "cannot connect to Auth0 (DNS or network): retried with backoff"),
    R("auth0", "*", "tls", None, Next.FATAL, "auth0_tls_untrusted", "Auth0's TLS certificate is not trusted: fix the system trust store or set [http] ca_bundle (`lead-poller check` shows the detail)"),
    R("auth0", "*", "*", None, Next.RETRY, "auth0_unexpected", "an unexpected Auth0 answer: retried with backoff, then failed"),
    # --- Salesforce -------------------------------------------------------------------------
    R("salesforce", "token", "400", "invalid_client_id", Next.FATAL, "salesforce_credentials_rejected", "Salesforce does not know the consumer key: check SALESFORCE_CLIENT_ID"),
    R("salesforce", "token", "400", "invalid_client", Next.FATAL, "salesforce_credentials_rejected", "wrong consumer secret: check SALESFORCE_CLIENT_SECRET"),
    R("salesforce", "token", "400", "invalid_grant", Next.FATAL, "salesforce_credentials_rejected", "the connected app refuses client credentials: enable the flow, set a Run As user, use the My Domain host"),
    R("salesforce", "token", "400", None, Next.FATAL, "salesforce_credentials_rejected", "Salesforce refused the token request"),
    R("salesforce", "token", "5xx", None, Next.OUTAGE, "salesforce_unavailable", "Salesforce login is unavailable: retried next cycle"),
    R("salesforce", "*", "401", "INVALID_SESSION_ID", Next.REFRESH, "salesforce_session_rejected", "session expired or revoked: a new token is fetched once; a second 401 stops the cycle"),
    R("salesforce", "*", "401", None, Next.REFRESH, "salesforce_session_rejected", "session rejected: a new token is fetched once; a second 401 stops the cycle"),
    R("salesforce", "*", "403", "REQUEST_LIMIT_EXCEEDED", Next.DAILY_LIMIT, "salesforce_daily_limit", "the org's daily API allowance is spent: writes stop this cycle, users stay pending and are tried again after an hour (or work.backoff_cap_seconds, if shorter) (exit 75 with --run-once)"),
    R("salesforce", "*", "403", "REQUEST_LIMIT_EXCEEDED (concurrent)", Next.RETRY, "salesforce_concurrency_limited", "too many long-running requests in the org at once (ConcurrentPerOrgLongTxn, not the daily allowance): retried with backoff"),
    R("salesforce", "*", "400", "INSUFFICIENT_ACCESS_OR_READONLY", Next.FATAL, "salesforce_forbidden", "the Run As user may not create or read Leads (a 400 as well as a 403): grant Create and Read on Lead"),
    R("salesforce", "*", "403", None, Next.FATAL, "salesforce_forbidden", "the Run As user lacks a permission (API Enabled, create/read on Lead)"),
    R("salesforce", "lead_write", "400", "REQUIRED_FIELD_MISSING", Next.PERMANENT, "REQUIRED_FIELD_MISSING", "a required Lead field is empty for this user (see the field)"),
    R("salesforce", "lead_write", "400", "INVALID_EMAIL_ADDRESS", Next.PERMANENT, "INVALID_EMAIL_ADDRESS", "Salesforce refused the user's email address"),
    R("salesforce", "lead_write", "400", "STRING_TOO_LONG", Next.PERMANENT, "STRING_TOO_LONG", "a value is longer than the org allows for the field"),
    R("salesforce", "lead_write", "400", "FIELD_CUSTOM_VALIDATION_EXCEPTION", Next.PERMANENT, "FIELD_CUSTOM_VALIDATION_EXCEPTION", "an org validation rule refused the lead (its message is recorded)"),
    R("salesforce", "lead_write", "400", "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", Next.PERMANENT, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "a picklist value (e.g. LeadSource) is not allowed in this org"),
    R("salesforce", "lead_write", "400", "INVALID_FIELD", Next.PERMANENT, "INVALID_FIELD", "the org has no such Lead field, or it is not writable"),
    R("salesforce", "lead_write", "400", "INVALID_FIELD_FOR_INSERT_UPDATE", Next.PERMANENT, "INVALID_FIELD_FOR_INSERT_UPDATE", "a mapped field is not createable for the Run As user"),
    R("salesforce", "lead_write", "400", "DUPLICATES_DETECTED", Next.DUPLICATE, "DUPLICATES_DETECTED", "a duplicate rule matched: adopt the match, save anyway, or skip ([salesforce] on_duplicate)"),
    R("salesforce", "lead_write", "400", "UNABLE_TO_LOCK_ROW", Next.RETRY, "UNABLE_TO_LOCK_ROW", "record lock contention in Salesforce: retried with backoff"),
    R("salesforce", "lead_write", "400", "DUPLICATE_EXTERNAL_ID", Next.PERMANENT, "MULTIPLE_MATCHES", "more than one lead has this external id (the field is not unique); the collections form of the single-record 300"),
    R("salesforce", "lead_batch", "300", None, Next.PERMANENT, "MULTIPLE_MATCHES", "more than one lead matched the external id (the field is not unique)"),
    R("salesforce", "lead_describe", "404", None, Next.FATAL, "salesforce_describe_missing", "the API has no Lead describe (an API that lacks it; or Lead not readable): a mapping of standard fields only carries on with their standard lengths; custom fields or external_id_field need the describe, so the run stops"),
    R("salesforce", "lead_batch", "404", "NOT_FOUND", Next.FATAL, "salesforce_external_id_missing", "the [salesforce] external_id_field does not exist or is not an External ID"),
    R("salesforce", "lead_batch", "400", None, Next.RETRY, "salesforce_batch_rejected", "Salesforce refused the whole batch request: retried with backoff, then failed"),
    R("salesforce", "lead_lookup", "400", "INVALID_FIELD", Next.FATAL, "salesforce_invalid_query", "the lookup query names a field the org lacks (check external_id_field)"),
    R("salesforce", "contact_lookup", "400", "INVALID_TYPE", Next.FATAL, "salesforce_contacts_unreadable", "[lead] skip_existing_contacts needs read access to Contact for the Run As user (or turn it off)"),
    R("salesforce", "lead_write", "400", None, Next.PERMANENT, "salesforce_rejected", "Salesforce refused the lead (the code and field are recorded)"),
    R("salesforce", "*", "400", None, Next.RETRY, "salesforce_bad_request", "Salesforce refused a request: retried with backoff, then failed"),
    R("salesforce", "*", "5xx", None, Next.OUTAGE, "salesforce_unavailable", "Salesforce answered 5xx (or a non-JSON body): retried with backoff, however long it lasts"),
    R("salesforce", "*", "timeout", None, Next.OUTAGE, "salesforce_timeout", "no answer in time; a lead write that may have happened is looked up before any new create"),
    R("salesforce", "*", "connection", None, Next.OUTAGE, "salesforce_unreachable", "cannot connect to Salesforce (DNS or network): retried with backoff"),
    R("salesforce", "*", "tls", None, Next.FATAL, "salesforce_tls_untrusted", "Salesforce's TLS certificate is not trusted: fix the system trust store or set [http] ca_bundle (`lead-poller check` shows the detail)"),
    R("salesforce", "*", "*", None, Next.RETRY, "salesforce_unexpected", "an unexpected Salesforce answer: retried with backoff, then failed"),
)


def untrusted_certificate(exc: BaseException) -> bool:
    """Whether a connection failed because the server's certificate is not trusted (a trust
    problem a person must fix, unlike a network that is down). Either HTTP client wraps the ssl
    module's error; its text is the same through both."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _status_matches(pattern: str, status: str) -> int:
    """0 = no match; higher = more specific."""
    if pattern == status:
        return 3
    if pattern.endswith("xx") and status.isdigit() and status[0] == pattern[0]:
        return 2
    if pattern == "*":
        return 1
    return 0


def lookup(api: str, operation: str, status: int | str, vendor_code: str | None = None) -> Rule:
    status_text = str(status)
    best: tuple[int, Rule] | None = None
    for rule in RULES:
        if rule.api != api:
            continue
        if rule.operation not in ("*", operation):
            continue
        status_score = _status_matches(rule.status, status_text)
        if not status_score:
            continue
        if rule.vendor_code is not None and rule.vendor_code != vendor_code:
            continue
        score = status_score * 100 + (10 if rule.vendor_code else 0) + (1 if rule.operation != "*" else 0)
        if best is None or score > best[0]:
            best = (score, rule)
    assert best is not None, f"no rule for {api} {operation} {status}"  # the '*' rows make this unreachable
    return best[1]


def markdown_table() -> str:
    """The README's failure table, generated from RULES."""
    lines = [
        "| API | call | answer | error code | what lead-poller does | recorded as | exit (--run-once) | what it means / what to do |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rule in RULES:
        lines.append(
            f"| {rule.api} | {rule.operation} | {rule.status} | {rule.vendor_code or ''} | {rule.next.value} | `{rule.code}` | {int(rule.exit_code)} | {rule.explanation} |"
        )
    return "\n".join(lines)


START, END = "<!-- failure-table:start -->", "<!-- failure-table:end -->"


def with_table(readme: str) -> str:
    """`readme` with the text between the failure-table markers replaced by the current table."""
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{markdown_table()}\n{END}{tail}"


if __name__ == "__main__":
    import sys
    from pathlib import Path

    if sys.argv[1:2] == ["--write"]:
        target = Path(sys.argv[2])
        target.write_text(with_table(target.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        print(markdown_table())
