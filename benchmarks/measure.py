"""What a run cost: API calls by endpoint (from the emulators' request logs), the minimum a poller
needs for a scenario, and the time the Auth0 rate limits allow at best."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from poller.sandbox import Sandbox
from poller.sandbox.auth0 import RateLimits
from poller.sandbox.server import Recorded

# Endpoints in the order the table shows them.
ENDPOINTS = (
    "auth0_token",
    "auth0_logs",
    "auth0_users_read",
    "auth0_users_search",
    "auth0_users_write",
    "salesforce_token",
    "salesforce_query",
    "salesforce_lead_write",
    "other",
)
# Auth0 rate-limit group of each endpoint (the token endpoint has its own limits, not emulated).
RATE_GROUP = {
    "auth0_logs": "logs",
    "auth0_users_read": "users_read",
    "auth0_users_search": "users_read",
    "auth0_users_write": "users_write",
}


def auth0_endpoint(call: Recorded) -> str:
    if call.path == "/oauth/token":
        return "auth0_token"
    if call.path == "/api/v2/logs" or call.path.startswith("/api/v2/logs/"):
        return "auth0_logs"
    if call.path == "/api/v2/users" and call.method == "GET":
        return "auth0_users_search"
    if call.path.startswith("/api/v2/users/"):
        return "auth0_users_read" if call.method == "GET" else "auth0_users_write"
    return "other"


def salesforce_endpoint(call: Recorded) -> str:
    if call.path == "/services/oauth2/token":
        return "salesforce_token"
    if re.fullmatch(r"/services/data/v[\d.]+/query/?", call.path):
        return "salesforce_query"
    if call.method in ("POST", "PATCH") and re.match(r"/services/data/v[\d.]+/(composite/)?sobjects/Lead\b|/services/data/v[\d.]+/composite/sobjects/?$", call.path):
        return "salesforce_lead_write"
    return "other"


def count_calls(sandbox: Sandbox, *, without_429: bool = False) -> dict[str, int]:
    """Every request both emulators received since their logs were last cleared, by endpoint
    (`without_429`: only the ones the rate limit let through)."""
    counts: Counter = Counter({name: 0 for name in ENDPOINTS})
    counts.update(auth0_endpoint(c) for c in sandbox.auth0.calls() if not (without_429 and c.status == 429))
    counts.update(salesforce_endpoint(c) for c in sandbox.salesforce.calls())
    return dict(counts)


def count_429(sandbox: Sandbox) -> int:
    return sum(1 for c in sandbox.auth0.calls() if c.status == 429)


def reset_counts(sandbox: Sandbox) -> None:
    sandbox.auth0.clear_log()
    sandbox.salesforce.clear_log()
    for group in sandbox.auth0.count_429:
        sandbox.auth0.count_429[group] = 0


@dataclass(frozen=True)
class Minimum:
    """The issue's floor for one cycle over `events` log events.

    ceil(events/100) + 1 log pages (the last one empty), one profile read per distinct user whose
    state the ledger does not know yet, one write-back per user who needs a lead, ceil(new/200)
    Salesforce lookups and as many writes, and one token per API. Batched profile reads (user search,
    100 users a call) can beat it.
    """

    events: int
    unknown_users: int
    need_lead: int

    def parts(self) -> dict[str, int]:
        batches = math.ceil(self.need_lead / 200)
        return {
            "auth0_token": 1,
            "auth0_logs": math.ceil(self.events / 100) + 1,
            "auth0_users_read": self.unknown_users,
            "auth0_users_write": self.need_lead,
            "salesforce_token": 1 if self.need_lead else 0,
            "salesforce_query": batches,
            "salesforce_lead_write": batches,
        }

    @property
    def total(self) -> int:
        return sum(self.parts().values())


def login_users(events: Iterable[dict], login_types: Iterable[str]) -> list[str]:
    """Distinct users of the login events, in order of first appearance."""
    types = frozenset(login_types)
    seen: dict[str, None] = {}
    for event in events:
        user_id = event.get("user_id")
        if event.get("type") in types and isinstance(user_id, str) and user_id:
            seen.setdefault(user_id, None)
    return list(seen)


def rate_limit_bound(calls: dict[str, int], limits: RateLimits) -> dict[str, float]:
    """Seconds each Auth0 rate-limit group needs at least for these calls (calls / allowed rate),
    and `bound`, the largest: no client can finish sooner."""
    per_group: Counter = Counter()
    for endpoint, group in RATE_GROUP.items():
        per_group[group] += calls.get(endpoint, 0)
    seconds = {group: n / (getattr(limits, group)[1] * limits.time_scale) for group, n in per_group.items()}
    seconds["bound"] = max(seconds.values(), default=0.0)
    return seconds
