"""The failure table: lookups pick the most specific row, and the README shows the table as it is."""

from pathlib import Path

import pytest

from poller import failures
from poller.failures import Next


@pytest.mark.parametrize(
    "api, operation, status, code, expected_code, expected_next",
    [
        ("auth0", "logs", 429, None, "auth0_rate_limited", Next.WAIT),
        ("auth0", "user_read", 404, "inexistent_user", "user_not_found", Next.NOT_FOUND),
        ("auth0", "user_write", 404, None, "user_not_found", Next.NOT_FOUND),
        ("auth0", "logs", 400, None, "auth0_checkpoint_rejected", Next.FATAL),
        ("auth0", "logs", 503, None, "auth0_unavailable", Next.OUTAGE),
        ("auth0", "token", 401, "access_denied", "auth0_credentials_rejected", Next.FATAL),
        ("auth0", "user_read", 401, "invalid_token", "auth0_token_rejected", Next.REFRESH),
        ("auth0", "user_read", "timeout", None, "auth0_timeout", Next.OUTAGE),
        ("auth0", "user_read", 418, None, "auth0_unexpected", Next.RETRY),
        ("salesforce", "lead_write", 400, "DUPLICATES_DETECTED", "DUPLICATES_DETECTED", Next.DUPLICATE),
        ("salesforce", "lead_write", 400, "SOMETHING_NEW", "salesforce_rejected", Next.PERMANENT),
        ("salesforce", "lead_lookup", 400, "MALFORMED_QUERY", "salesforce_bad_request", Next.RETRY),
        ("salesforce", "lead_write", 403, "REQUEST_LIMIT_EXCEEDED", "salesforce_daily_limit", Next.DAILY_LIMIT),
        ("salesforce", "lead_lookup", 403, "INSUFFICIENT_ACCESS", "salesforce_forbidden", Next.FATAL),
        ("salesforce", "token", 400, "invalid_client", "salesforce_credentials_rejected", Next.FATAL),
        ("salesforce", "lead_write", 502, None, "salesforce_unavailable", Next.OUTAGE),
    ],
)
def test_lookup_takes_the_most_specific_row(api, operation, status, code, expected_code, expected_next):
    rule = failures.lookup(api, operation, status, code)
    assert (rule.code, rule.next) == (expected_code, expected_next)


def test_readme_failure_table_is_generated_from_the_rules():
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert failures.markdown_table() in readme, "run: python -m poller.failures --write README.md"
    assert failures.with_table(readme) == readme
