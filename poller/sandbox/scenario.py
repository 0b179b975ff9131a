"""Deterministic sandbox data: Auth0 users, tenant log events shaped like real ones, log ids.

Everything here is a pure function of its arguments (and a seed): no wall clock, no network, no
files. The shapes follow the real events in shared/samples/auth0-logs.jsonl (an `s` with the
Universal Login prompts, an SSO `s` with empty prompts and no connection, `ss` without a hostname,
`seacft`, `f` without a user, `fu` and `seccft` with `user_id: ""`, `sapi`) plus the other types a
real tenant produces (scoa, sens, sepft, sertft, ssa, fp, slo, api_limit_warning).

Personal data is fictional: emails are @example.com / @example.org, IPs are 203.0.113.0/24 and
2001:db8::/32 (documentation ranges), phone numbers are +1 202 555 01xx.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

__all__ = [
    "LOGIN_TYPES",
    "TENANT",
    "HOSTNAME",
    "DEMO_START",
    "make_log_id",
    "log_event",
    "user_profile",
    "Scenario",
    "demo_scenario",
    "BenchScenario",
    "bench_scenario",
    "DayLaterScenario",
    "day_later_scenario",
]

#: What the scenarios count as "a login" (shared/reference/auth0.md §3's recommended filter).
LOGIN_TYPES = frozenset({"s", "scoa", "sens", "sepft"})

TENANT = "lead-poller-demo"
HOSTNAME = f"{TENANT}.us.auth0.com"
DEMO_START = datetime(2025, 3, 3, 9, 0, 0, tzinfo=timezone.utc)
_PROFILE_EPOCH = datetime(2023, 1, 9, 8, 0, 0, tzinfo=timezone.utc)

_DB = "Username-Password-Authentication"

# provider -> (connection, strategy, strategy_type, isSocial)
_PROVIDERS: dict[str, tuple[str, str, str, bool]] = {
    "auth0": (_DB, "auth0", "database", False),
    "google-oauth2": ("google-oauth2", "google-oauth2", "social", True),
    "apple": ("apple", "apple", "social", True),
    "github": ("github", "github", "social", True),
    "windowslive": ("windowslive", "windowslive", "social", True),
    "sms": ("sms", "sms", "passwordless", False),
    "email": ("email", "email", "passwordless", False),
}

_CLIENTS = [
    ("aI61p8I8aFjmYRliLWgvM9ev97kCCNDB", "Default App"),
    ("Xq4bT0m3kR7vN2cL9pW5sH8dJ1fG6aZe", "Acme Web"),
    ("Lm2nB5vC8xZ1qW4eR7tY0uI3oP6aS9dF", "Acme iOS"),
]
_ALL_APPS = ("360yuN1BXP4u3tBChK5VOgekgGJ7CwLL", "All Applications")
_M2M_CLIENT = ("MWNhMmRiOGY5MGIxNjE0ZTVmMjc0NDhl", "reporting-job")

_BROWSERS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.82 Mobile Safari/537.36",
]
_BACKENDS = ["Go-http-client/2.0", "okhttp/4.12.0", "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)"]

_DESCRIPTIONS = {
    "s": "",
    "ss": "",
    "scoa": "",
    "sens": "Native Social Login",
    "sepft": "",
    "seacft": "",
    "sertft": "",
    "ssa": "Successful silent authentication",
    "seccft": "",
    "f": "the connection is not enabled",
    "fu": "Wrong email or password.",
    "fp": "Wrong email or password.",
    "slo": "User successfully logged out.",
    "sapi": "Update a user",
    "api_limit_warning": "Rate limit warning: 80% of the Management API global limit reached",
}

# Types whose events carry the connection/strategy of the user's identity.
_WITH_CONNECTION = {"s", "ss", "scoa", "sens", "sepft", "fu", "fp"}


# --- small deterministic helpers ----------------------------------------------------------------


def _rng(*parts: Any) -> random.Random:
    """A Random seeded by the parts (str seeds are hashed with SHA-512: stable across runs)."""
    return random.Random("\x1f".join(str(p) for p in parts))


def _hex(r: random.Random, n: int) -> str:
    return f"{r.getrandbits(4 * n):0{n}x}"


def _digits(r: random.Random, n: int) -> str:
    return str(r.randint(1, 9)) + "".join(r.choice("0123456789") for _ in range(n - 1))


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def _iso(when: datetime) -> str:
    return _utc(when).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(when: datetime) -> int:
    return int(_utc(when).timestamp() * 1000)


@functools.lru_cache(maxsize=64)
def _connection_id(connection: str) -> str:
    digest = hashlib.sha256(connection.encode()).hexdigest()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "con_" + "".join(alphabet[int(digest[i:i + 2], 16) % len(alphabet)] for i in range(0, 32, 2))


def _provider(user_id: str) -> str:
    return user_id.split("|", 1)[0] if "|" in user_id else "auth0"


@functools.lru_cache(maxsize=100_000)
def _ip_for(key: str) -> str:
    r = _rng("ip", key)
    if r.random() < 0.12:
        return f"2001:db8:{r.randint(1, 0xffff):x}::{r.randint(1, 0xffff):x}"
    return f"203.0.113.{r.randint(1, 254)}"


@functools.lru_cache(maxsize=100_000)
def _agent_for(key: str) -> str:
    return _BROWSERS[int(hashlib.blake2b(key.encode(), digest_size=4).hexdigest(), 16) % len(_BROWSERS)]


def _session_id(r: random.Random) -> str:
    return base64.urlsafe_b64encode(r.getrandbits(192).to_bytes(24, "big")).decode()  # 32 chars


def _masked(r: random.Random, n: int = 42) -> str:
    return "*" * n + base64.urlsafe_b64encode(r.getrandbits(24).to_bytes(3, "big")).decode()[:3]


# --- log ids and events -------------------------------------------------------------------------


def make_log_id(when: datetime, seq: int, region: str = "900") -> str:
    """56 digits: region (3) + UTC `YYYYMMDDhhmmss` (14) + `seq` zero-padded to 39 digits."""
    if len(region) != 3 or not region.isdigit():
        raise ValueError("region must be 3 digits")
    if seq < 0 or seq >= 10**39:
        raise ValueError("seq must fit in 39 digits")
    w = _utc(when)
    return f"{region}{w.year:04d}{w.month:02d}{w.day:02d}{w.hour:02d}{w.minute:02d}{w.second:02d}{seq:039d}"


def log_event(
    type: str,
    *,
    user_id: str | None,
    when: datetime,
    seq: int,
    shape: str | None = None,
    rng: random.Random | None = None,
    **overrides: Any,
) -> dict:
    """A realistic tenant log event of `type`, logged (ingested) at `when`.

    `log_id` is `make_log_id(when, seq)`; `date` (the event time) is a fraction of a second to a few
    seconds earlier, as in real tenants. `user_name` defaults to something derived from `user_id`;
    pass `user_name=` (the email, or the phone number) to match a profile. `shape="sso"` gives an `s`
    the SSO shape (empty prompts, no connection/strategy, `connection_id: ""`). The variable parts
    (session ids, timings, client) come from `rng`, by default one seeded by the arguments, so the
    same call gives the same event; a generator of many events passes its own (faster). Overrides replace
    fields; an override of None removes the field. `fu` and `seccft` always have `user_id: ""`
    (override it if you must); `f` has no `user_id` unless one is given.
    """
    when = _utc(when)
    r = rng if rng is not None else _rng("event", type, user_id, seq, _iso(when))
    provider = _provider(user_id or "")
    connection, strategy, strategy_type, is_social = _PROVIDERS.get(provider, _PROVIDERS["auth0"])
    client_id, client_name = _CLIENTS[r.randrange(len(_CLIENTS))]
    date = when - timedelta(milliseconds=r.randint(120, 4800))
    user_name = overrides.pop("user_name", None)
    if user_name is None and user_id:
        user_name = f"user-{hashlib.sha1(user_id.encode()).hexdigest()[:8]}@example.com"
    ip = _ip_for(user_id or f"anon{seq}")
    agent = _agent_for(user_id or f"anon{seq}")

    event: dict[str, Any] = {
        "date": _iso(date),
        "type": type,
        "description": _DESCRIPTIONS.get(type, ""),
    }
    if type in _WITH_CONNECTION:
        event["connection"] = connection
        event["connection_id"] = _connection_id(connection)
    else:
        event["connection_id"] = ""
    event.update({"client_id": client_id, "client_name": client_name, "ip": ip, "user_agent": agent})
    details: dict[str, Any] = {}
    event["details"] = details
    event["hostname"] = HOSTNAME
    if user_id is not None:
        event["user_id"] = user_id
    if user_name is not None:
        event["user_name"] = user_name
    if type in _WITH_CONNECTION:
        event["strategy"] = strategy
        event["strategy_type"] = strategy_type

    session = _session_id(r)
    initiated = _ms(date) - r.randint(2000, 25000)
    completed = _ms(date)
    logins = r.randint(1, 60)

    if type == "s" and shape == "sso":
        for key in ("connection", "strategy", "strategy_type"):
            event.pop(key, None)
        event["connection_id"] = ""
        details.update({"prompts": [], "completedAt": completed, "elapsedTime": None, "session_id": session})
    elif type == "s":
        identity = (user_id or "").split("|", 1)[-1]
        details.update({
            "prompts": [
                {
                    "name": "prompt-authenticate" if strategy_type == "database" else "federated-authenticate",
                    "completedAt": completed - r.randint(150, 400),
                    "connection": connection,
                    "connection_id": event["connection_id"],
                    "strategy": strategy,
                    "identity": identity,
                    "stats": {"loginsCount": logins},
                    "elapsedTime": None,
                },
                {
                    "name": "login",
                    "flow": "universal-login",
                    "initiatedAt": initiated + 9,
                    "completedAt": completed - r.randint(100, 200),
                    "timers": {"rules": r.randint(2, 9)},
                    "user_id": user_id,
                    "user_name": user_name,
                    "elapsedTime": completed - initiated - r.randint(200, 400),
                },
            ],
            "initiatedAt": initiated,
            "completedAt": completed,
            "elapsedTime": completed - initiated,
            "session_id": session,
            "stats": {"loginsCount": logins},
        })
        if r.random() < 0.5:
            details["riskAssessment"] = {
                "confidence": r.choice(["high", "medium", "low"]),
                "version": "1",
                "assessments": {
                    "UntrustedIP": {"confidence": "high", "code": "not_found_on_deny_list"},
                    "NewDevice": {"confidence": "medium", "code": "match"},
                    "ImpossibleTravel": {"confidence": "high", "code": "minimal_travel_from_last_login"},
                },
            }
    elif type == "ss":
        # Signups, like the real sample, carry the request body and no hostname.
        del event["hostname"]
        client_id, client_name = _ALL_APPS
        event.update({"client_id": client_id, "client_name": client_name, "user_agent": "unknown"})
        details["body"] = {
            "client_id": client_id,
            "tenant": TENANT,
            "email": user_name,
            "password": "*****",
            "connection": connection,
        }
    elif type == "scoa":
        details.update({"session_id": session, "stats": {"loginsCount": logins}})
    elif type == "sens":
        details.update({"session_id": session, "stats": {"loginsCount": logins}, "actions": {"executions": []}})
        event["user_agent"] = _BACKENDS[1]
        event["isMobile"] = True
    elif type == "sepft":
        event["audience"] = "https://api.example.com/"
        event["scope"] = "openid profile email offline_access"
        event["user_agent"] = _BACKENDS[r.randrange(len(_BACKENDS))]
        details.update({"actions": {"executions": []}})
    elif type == "seacft":
        event["user_agent"] = _BACKENDS[0]
        details["code"] = _masked(r)
    elif type == "sertft":
        event["user_agent"] = _BACKENDS[r.randrange(len(_BACKENDS))]
        event["audience"] = "https://api.example.com/"
        event["scope"] = "openid profile email offline_access"
        details["refresh_token"] = _masked(r, 29)
    elif type == "ssa":
        event["session_connection"] = connection
        details.update({"prompts": [], "initiatedAt": initiated, "completedAt": completed,
                        "elapsedTime": completed - initiated, "session_id": session})
    elif type == "seccft":
        client_id, client_name = _M2M_CLIENT
        event = {
            "_id": None,  # filled below: older API responses repeat log_id as _id
            "audience": f"https://{HOSTNAME}/api/v2/",
            "client_id": client_id,
            "client_name": client_name,
            "connection_id": "",
            "date": event["date"],
            "description": "",
            "hostname": HOSTNAME,
            "ip": _ip_for("m2m"),
            "isMobile": False,
            "scope": "read:logs read:users update:users_app_metadata",
            "tenant_name": TENANT,
            "type": "seccft",
            "user_agent": "Other 0.0.0 / Other 0.0.0",
            "user_id": "",
            "user_name": "",
        }
    elif type == "f":
        client_id, client_name = _ALL_APPS
        event.update({"client_id": client_id, "client_name": client_name, "connection": "NewDB",
                      "connection_id": _connection_id("NewDB")})
        details.update({
            "body": {},
            "qs": {"client_id": client_id, "response_type": "code", "connection": "NewDB", "prompt": "login",
                   "scope": "openid profile", "redirect_uri": "https://app.example.com/callback"},
            "connection": "NewDB",
            "error": {"message": "the connection is not enabled", "oauthError": "invalid_request",
                      "type": "request-error"},
            "session_id": session,
            "riskAssessment": None,
        })
        event["audience"] = f"https://{HOSTNAME}/userinfo"
        event["scope"] = ["openid", "profile"]
    elif type == "fu":
        event["connection"] = _DB
        event["connection_id"] = _connection_id(_DB)
        event["strategy"], event["strategy_type"] = "auth0", "database"
        event["user_id"] = ""
        if user_name is None or user_id:
            event["user_name"] = f"unknown-{seq % 997}@example.com"
        details["error"] = {"message": "Wrong email or password."}
    elif type == "fp":
        details["error"] = {"message": "Wrong email or password."}
        details["stats"] = {"loginsCount": logins}
    elif type == "slo":
        details.update({"return_to": "https://app.example.com/", "allowed_logout_url": ["https://app.example.com/"],
                        "session_id": session})
    elif type == "sapi":
        admin = user_id or "auth0|6181ce2b0f293a006d158194"
        event["user_id"] = admin
        event.pop("user_name", None)
        event["client_name"] = ""
        target = f"auth0|{_hex(r, 24)}"
        details.update({
            "request": {
                "method": "patch",
                "path": f"/api/v2/users/{target}",
                "query": {},
                "userAgent": agent,
                "body": {"app_metadata": {"plan": "pro"}},
                "channel": "https://manage.auth0.com/",
                "ip": ip,
                "auth": {"user": {"user_id": admin, "name": "admin@example.com", "email": "admin@example.com"},
                         "strategy": "jwt", "credentials": {"jti": _hex(r, 32)}},
            },
            "response": {"statusCode": 200, "body": {"user_id": target, "app_metadata": {"plan": "pro"}}},
        })
    elif type == "api_limit_warning":
        event.pop("user_id", None)
        event.pop("user_name", None)
        event["user_agent"] = _BACKENDS[0]
        details.update({"limit": 50, "remaining": 10, "window": "1s", "path": "/api/v2/users"})

    log_id = make_log_id(when, seq)
    event["log_id"] = log_id
    if "_id" in event:
        event["_id"] = log_id
    for key, value in overrides.items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    return event


# --- users --------------------------------------------------------------------------------------


def _initials_avatar(seed: str, initials: str) -> str:
    digest = hashlib.md5(seed.encode()).hexdigest()
    code = (initials or "u")[:2].lower()
    if not code.isascii() or not code.isalnum():
        code = "u"
    return (f"https://s.gravatar.com/avatar/{digest}?s=480&r=pg&d=https%3A%2F%2Fcdn.auth0.com"
            f"%2Favatars%2F{code}.png")


def user_profile(
    user_id: str,
    *,
    email: str | None,
    given_name: str | None = None,
    family_name: str | None = None,
    name: str | None = None,
    app_metadata: dict | None = None,
    **extra: Any,
) -> dict:
    """A full Auth0 user object, as `GET /api/v2/users/{id}` returns it.

    `name` defaults to "given family", else the email (Auth0's default for database users), else the
    phone number. Timestamps, counts and the last IP derive from `user_id` (deterministic).
    `extra` adds or replaces fields; None removes one.
    """
    provider = _provider(user_id)
    connection, _strategy, _type, is_social = _PROVIDERS.get(provider, _PROVIDERS["auth0"])
    r = _rng("user", user_id)
    created = _PROFILE_EPOCH + timedelta(seconds=r.randint(0, 600 * 86400))
    updated = created + timedelta(seconds=r.randint(0, 60 * 86400))
    last_login = updated + timedelta(seconds=r.randint(0, 30 * 86400))
    phone = extra.get("phone_number")
    if name is None:
        if given_name or family_name:
            name = " ".join(p for p in (given_name, family_name) if p)
        else:
            name = email or phone or user_id
    nickname = (email.split("@", 1)[0] if email else (given_name or name))
    initials = "".join(p[:1] for p in (given_name, family_name) if p) or (nickname or "u")[:2]

    user: dict[str, Any] = {"created_at": _iso(created)}
    if email is not None:
        user["email"] = email
        user["email_verified"] = bool(is_social) or r.random() < 0.85
    user.update({
        "identities": [{
            "connection": connection,
            "provider": provider,
            "user_id": user_id.split("|", 1)[1] if "|" in user_id else user_id,
            "isSocial": is_social,
        }],
        "name": name,
        "nickname": nickname,
        "picture": _initials_avatar(email or user_id, initials),
        "updated_at": _iso(updated),
        "user_id": user_id,
    })
    if given_name is not None:
        user["given_name"] = given_name
    if family_name is not None:
        user["family_name"] = family_name
    user["app_metadata"] = dict(app_metadata or {})
    user["user_metadata"] = {}
    user.update({
        "last_ip": _ip_for(user_id),
        "last_login": _iso(last_login),
        "logins_count": r.randint(1, 120),
    })
    for key, value in extra.items():
        if value is None:
            user.pop(key, None)
        else:
            user[key] = value
    return user


# --- the demo tenant ----------------------------------------------------------------------------

_FIRST = ["Ada", "Grace", "Linus", "Margaret", "Alan", "Katherine", "Dennis", "Barbara", "Ken", "Frances",
          "Radia", "Edsger", "Hedy", "Sofía", "José", "Björn", "Łukasz", "François", "Ngozi", "Aiko", "Priya",
          "Olusegun", "Mateo", "Ingrid", "Søren", "Mei", "Tomás", "Anaïs", "Kwame", "Dagný"]
_LAST = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Turing", "Johnson", "Ritchie", "Liskov", "Thompson",
         "Allen", "Perlman", "Dijkstra", "Lamarr", "García", "Müller", "Nakamura", "O'Brien", "van der Berg",
         "Núñez", "Kowalski", "Okafor", "Smith-Jones", "Lindqvist", "Dubois", "Mensah", "Rossi", "Ødegård"]

# Special people the demo always includes (given, family, name).
_SPECIAL = [
    ("Zoë 🚀", "Park 🌸", None),
    ("ليلى", "حداد", None),
    ("נועה", "כהן", None),
    ("Maximiliana-Alexandra-Friederike-Konstanze",
     "Wolfeschlegelsteinhausenbergerdorff-Montgomery-Fitzgerald-Smythe-Worthington-Vanderbilt-Ashcombe",
     None),
    ("太郎", "山田", None),
]
_EXTRA_APP_METADATA = [
    {"plan": "pro", "roles": ["admin"]},
    {"plan": "free", "signup_source": "campaign-2024", "flags": {"beta": True}},
    {"roles": ["billing"], "tenant_region": "eu"},
]


def _ascii_slug(text: str) -> str:
    return "".join(c for c in text.lower() if c.isascii() and c.isalnum())


def _new_user_id(r: random.Random, provider: str) -> str:
    if provider == "google-oauth2":
        return f"google-oauth2|{_digits(r, 21)}"
    if provider == "apple":
        return f"apple|000{r.randint(100, 999)}.{_hex(r, 32)}.{r.randint(1000, 9999)}"
    if provider == "github":
        return f"github|{_digits(r, 8)}"
    if provider == "windowslive":
        return f"windowslive|{_hex(r, 16)}"
    return f"{provider}|{_hex(r, 24)}"


@dataclass
class Scenario:
    users: list[dict]
    logs: list[dict]  # sorted by log_id
    expected: dict = field(default_factory=dict)


def _summarise(users: list[dict], logs: list[dict]) -> dict:
    by_id = {u["user_id"]: u for u in users}
    login_ids = {e["user_id"] for e in logs if e["type"] in LOGIN_TYPES and e.get("user_id")}
    seen = {e.get("user_id") for e in logs if e.get("user_id")}
    signup_or_login = login_ids | {e["user_id"] for e in logs if e["type"] == "ss" and e.get("user_id")}

    def flagged(u: dict) -> bool:
        return (u.get("app_metadata") or {}).get("recordedAsLead") is True

    counts: dict[str, int] = {}
    for e in logs:
        counts[e["type"]] = counts.get(e["type"], 0) + 1
    return {
        "login_types": sorted(LOGIN_TYPES),
        "eligible_user_ids": sorted(
            uid for uid in login_ids if uid in by_id and by_id[uid].get("email") and not flagged(by_id[uid])
        ),
        "flagged_user_ids": sorted(uid for uid, u in by_id.items() if flagged(u)),
        "no_email_user_ids": sorted(uid for uid, u in by_id.items() if not u.get("email")),
        "non_login_only_user_ids": sorted(uid for uid in seen - signup_or_login if uid in by_id),
        "deleted_user_ids": sorted(uid for uid in login_ids if uid not in by_id),
        "preserved_app_metadata": {
            uid: dict(u["app_metadata"]) for uid, u in by_id.items()
            if any(k != "recordedAsLead" for k in (u.get("app_metadata") or {}))
        },
        "event_type_counts": dict(sorted(counts.items())),
    }


def demo_scenario(seed: int = 7, users: int = 50, events: int = 300, start: datetime = DEMO_START) -> Scenario:
    """A small tenant with the awkward cases a real one has; see `Scenario.expected` for the truth.

    About 10% of the users are already flagged `recordedAsLead` (with other app_metadata keys), ~6%
    have no email (SMS users, a GitHub user with a private email), ~8% appear only in non-login events,
    one user who logged in has since been deleted (GET answers 404), and the first ordinary users have
    emoji, Arabic, Hebrew, CJK and very long names, or app_metadata keys that must survive a PATCH.
    `events` is a target: every user gets at least one event even if that needs more.
    """
    if users < 4:
        raise ValueError("demo_scenario needs at least 4 users")
    rng = random.Random(seed)
    start = _utc(start)
    n_flagged = max(1, round(users * 0.10))
    n_no_email = max(1, round(users * 0.06))
    n_non_login = max(1, round(users * 0.08))
    n_ordinary = users - n_flagged - n_no_email - n_non_login
    if n_ordinary < 1:
        raise ValueError("too few users for the mix")

    people: list[dict] = []
    counter = 0

    def next_email(slug: str, domain: str | None = None) -> str:
        nonlocal counter
        counter += 1
        dom = domain or ("example.org" if counter % 4 == 0 else "example.com")
        return f"{slug or 'user'}.{counter}@{dom}"

    ordinary: list[dict] = []
    for i in range(n_ordinary):
        provider = rng.choices(["auth0", "google-oauth2", "apple", "windowslive"], [70, 18, 7, 5])[0]
        uid = _new_user_id(rng, provider)
        if i < len(_SPECIAL):
            given, family, name = _SPECIAL[i]
            slug = f"user{i}"
            user = user_profile(uid, email=next_email(slug), given_name=given, family_name=family, name=name)
        elif i == len(_SPECIAL):
            # A database user without given/family names: Auth0 sets name = email.
            uid = _new_user_id(rng, "auth0")
            user = user_profile(uid, email=next_email("jsmith"))
        elif i == len(_SPECIAL) + 1:
            # A name much longer than Salesforce's LastName (80) and FirstName (40) columns.
            long_name = "Bartholomew " + " ".join(["Featherstonehaugh-Cholmondeley"] * 9)
            user = user_profile(uid, email=next_email("bartholomew"), given_name="Bartholomew",
                                family_name=long_name[len("Bartholomew "):], name=long_name)
        else:
            given, family = rng.choice(_FIRST), rng.choice(_LAST)
            user = user_profile(uid, email=next_email(_ascii_slug(given) + "." + _ascii_slug(family)),
                                given_name=given, family_name=family)
        j = i - (len(_SPECIAL) + 2)
        if 0 <= j < len(_EXTRA_APP_METADATA):
            user["app_metadata"] = dict(_EXTRA_APP_METADATA[j])
        ordinary.append(user)

    flagged: list[dict] = []
    for i in range(n_flagged):
        given, family = rng.choice(_FIRST), rng.choice(_LAST)
        uid = _new_user_id(rng, "auth0")
        meta = {"recordedAsLead": True, "leadSource": "legacy-rule",
                "recordedAt": f"2024-0{1 + i % 9}-1{i % 10}T10:00:00.000Z"}
        if i % 2 == 0:
            meta["plan"] = "pro"
        flagged.append(user_profile(uid, email=next_email(_ascii_slug(given) + "." + _ascii_slug(family)),
                                    given_name=given, family_name=family, app_metadata=meta))

    no_email: list[dict] = []
    for i in range(n_no_email):
        if i % 3 == 2:
            uid = _new_user_id(rng, "github")
            no_email.append(user_profile(uid, email=None, name="octo-dev", nickname="octo-dev"))
        else:
            uid = _new_user_id(rng, "sms")
            phone = f"+1202555{100 + (i % 100):04d}"
            no_email.append(user_profile(uid, email=None, phone_number=phone, phone_verified=True,
                                         nickname=phone))

    non_login: list[dict] = []
    for _ in range(n_non_login):
        given, family = rng.choice(_FIRST), rng.choice(_LAST)
        uid = _new_user_id(rng, "auth0")
        non_login.append(user_profile(uid, email=next_email(_ascii_slug(given) + "." + _ascii_slug(family)),
                                      given_name=given, family_name=family))

    deleted_ids = [_new_user_id(rng, "auth0")] if users >= 10 else []

    people = ordinary + flagged + no_email + non_login
    rng.shuffle(people)
    by_id = {u["user_id"]: u for u in people}

    def handle(uid: str) -> str:
        u = by_id.get(uid)
        if u is None:
            return f"deleted-{uid[-6:]}@example.com"
        return u.get("email") or u.get("phone_number") or u.get("nickname") or uid

    login_users = [u["user_id"] for u in ordinary + flagged + no_email] + deleted_ids
    non_login_users = [u["user_id"] for u in non_login]
    # A few heavy users: real tenants have users who log in every day.
    weights = [rng.choice([1, 1, 1, 2, 3, 8]) for _ in login_users]

    def login_type_for(uid: str) -> str:
        provider = _provider(uid)
        if provider in ("google-oauth2", "apple", "windowslive", "github"):
            return rng.choices(["s", "sens"], [3, 1])[0]
        if provider in ("sms", "email"):
            return "s"
        return rng.choices(["s", "scoa", "sepft"], [6, 1, 1])[0]

    def login_group(uid: str, first: bool) -> list[tuple[str, str | None, dict]]:
        t = login_type_for(uid)
        group: list[tuple[str, str | None, dict]] = []
        if first and rng.random() < 0.2 and _provider(uid) == "auth0":
            group.append(("ss", uid, {}))
            t = "s"
        shape = "sso" if t == "s" and rng.random() < 0.12 else None
        group.append((t, uid, {"shape": shape}))
        if t == "s" and rng.random() < 0.6:
            group.append(("seacft", uid, {}))
        return group

    groups: list[list[tuple[str, str | None, dict]]] = []
    for uid in login_users:
        groups.append(login_group(uid, first=True))
    non_login_user_types = ["seacft", "sertft", "ssa", "f", "fp", "slo"]
    for k, uid in enumerate(non_login_users):
        groups.append([(non_login_user_types[k % len(non_login_user_types)], uid, {})])
    # The sample shapes, always present.
    groups.append([("s", ordinary[0]["user_id"], {"shape": "sso"})])
    groups.append([("seccft", None, {})])
    groups.append([("fu", None, {})])
    groups.append([("f", None, {})])
    groups.append([("sapi", ordinary[-1]["user_id"], {})])

    other_types = ["seacft", "sertft", "ssa", "seccft", "f", "fu", "fp", "slo", "sapi", "api_limit_warning"]
    other_weights = [18, 18, 15, 12, 5, 8, 8, 10, 4, 2]
    total = sum(len(g) for g in groups)
    while total < events:
        if rng.random() < 0.5:
            group = login_group(rng.choices(login_users, weights)[0], first=False)
        else:
            t = rng.choices(other_types, other_weights)[0]
            if t in ("seccft", "fu", "api_limit_warning"):
                uid = None
            elif t == "f":
                uid = None if rng.random() < 0.5 else rng.choice(login_users + non_login_users)
            elif t == "sapi":
                uid = ordinary[-1]["user_id"]
            else:
                uid = rng.choice(login_users + non_login_users)
            group = [(t, uid, {})]
        group = group[: events - total]
        groups.append(group)
        total += len(group)

    rng.shuffle(groups)
    # A signup comes before that user's other events.
    for uid in [g[0][1] for g in groups if g[0][0] == "ss"]:
        idx = next(i for i, g in enumerate(groups) if g[0][0] == "ss" and g[0][1] == uid)
        first = next(i for i, g in enumerate(groups) if any(u == uid for _t, u, _o in g))
        if first < idx:
            groups.insert(first, groups.pop(idx))

    logs: list[dict] = []
    when = start
    seq = 0
    for group in groups:
        when += timedelta(seconds=max(1, int(rng.expovariate(1 / 40))))
        for k, (t, uid, opts) in enumerate(group):
            seq += 1
            at = when + timedelta(seconds=k)
            kwargs = dict(opts)
            shape = kwargs.pop("shape", None)
            name = handle(uid) if uid else None
            if name is not None:
                kwargs["user_name"] = name
            logs.append(log_event(t, user_id=uid, when=at, seq=seq, shape=shape, **kwargs))
        when += timedelta(seconds=len(group))
    logs.sort(key=lambda e: (len(e["log_id"]), e["log_id"]))
    people_sorted = sorted(people, key=lambda u: u["created_at"])
    return Scenario(users=people_sorted, logs=logs, expected=_summarise(people_sorted, logs))


# --- the benchmark tenant -----------------------------------------------------------------------


@dataclass
class BenchScenario:
    """Users in memory; events generated on demand (`events()` or iterating), the same every time."""

    users: list[dict]
    event_count: int
    need_lead_ids: list[str]
    seed: int
    start: datetime
    expected: dict = field(default_factory=dict)

    def __iter__(self) -> Iterator[dict]:
        return self.events()

    def __len__(self) -> int:
        return self.event_count

    def events(self) -> Iterator[dict]:
        rng = random.Random(f"bench-events:{self.seed}")
        all_ids = [u["user_id"] for u in self.users]
        by_id = {u["user_id"]: u.get("email") for u in self.users}
        login_slots = (self.event_count + 1) // 2
        first_login = {j * login_slots // len(self.need_lead_ids): uid for j, uid in enumerate(self.need_lead_ids)} \
            if self.need_lead_ids else {}
        other_types = ["seacft", "sertft", "ssa", "seccft", "fu", "fp", "slo", "f"]
        other_weights = [20, 20, 15, 10, 10, 10, 10, 5]
        when = self.start
        for i in range(self.event_count):
            when += timedelta(milliseconds=rng.randint(50, 1500))
            if i % 2 == 0:
                uid = first_login.get(i // 2) or rng.choice(all_ids)
                t = rng.choices(["s", "scoa", "sepft"], [8, 1, 1])[0]
            else:
                t = rng.choices(other_types, other_weights)[0]
                uid = None if t in ("seccft", "fu") or (t == "f" and rng.random() < 0.5) else rng.choice(all_ids)
            kwargs = {"user_name": by_id[uid]} if uid else {}
            yield log_event(t, user_id=uid, when=when, seq=i + 1, rng=rng, **kwargs)


def bench_scenario(events: int, users: int, need_lead: int, seed: int = 1,
                   start: datetime = DEMO_START) -> BenchScenario:
    """`users` database users, `need_lead` of them not yet flagged (the rest already are), and `events`
    log events, every other one a login (s/scoa/sepft) and the rest other types. Every need-lead user
    logs in at least once; their first logins are spread evenly over the stream.
    """
    if not 0 <= need_lead <= users:
        raise ValueError("need 0 <= need_lead <= users")
    if users < 1:
        raise ValueError("need at least one user")
    if need_lead > (events + 1) // 2:
        raise ValueError("not enough login events for every need-lead user to log in")
    rng = random.Random(f"bench-users:{seed}")
    need = set(rng.sample(range(users), need_lead))
    user_list: list[dict] = []
    need_ids: list[str] = []
    for i in range(users):
        uid = _new_user_id(rng, "auth0")
        given, family = rng.choice(_FIRST), rng.choice(_LAST)
        email = f"{_ascii_slug(given)}.{_ascii_slug(family)}.{i}@{'example.org' if i % 5 == 0 else 'example.com'}"
        meta = None if i in need else {"recordedAsLead": True, "leadSource": "legacy-rule"}
        user_list.append(user_profile(uid, email=email, given_name=given, family_name=family, app_metadata=meta))
        if i in need:
            need_ids.append(uid)
    rng.shuffle(need_ids)
    need_set = set(need_ids)
    expected = {
        "login_types": sorted(LOGIN_TYPES),
        "eligible_user_ids": sorted(need_ids),
        "flagged_user_ids": sorted(u["user_id"] for u in user_list if u["user_id"] not in need_set),
        "event_count": events,
        "login_event_count": (events + 1) // 2,
    }
    return BenchScenario(users=user_list, event_count=events, need_lead_ids=need_ids, seed=seed,
                         start=_utc(start), expected=expected)


@dataclass
class DayLaterScenario:
    """A bench tenant a day later: `users` are the newcomers (add them to the tenant), `events()` the
    new log events, all after the base scenario's. A share of the events comes from the newcomers
    (each signs in once: an `s` followed by its `seacft`, as a Universal Login flow logs it); every
    other event comes from users who signed in during the base scenario, so the ledger knows them."""

    users: list[dict]
    event_count: int
    need_lead_ids: list[str]
    seen_user_ids: list[str]
    seed: int
    start: datetime
    first_seq: int
    expected: dict = field(default_factory=dict)

    def __iter__(self) -> Iterator[dict]:
        return self.events()

    def __len__(self) -> int:
        return self.event_count

    def events(self) -> Iterator[dict]:
        rng = random.Random(f"day-later-events:{self.seed}")
        emails = {u["user_id"]: u.get("email") for u in self.users}
        # The newcomers' sign-ins (two events each) start at evenly spread positions.
        spacing = self.event_count // max(len(self.need_lead_ids), 1)  # >= 2: room for both events
        starts = {k * spacing: uid for k, uid in enumerate(self.need_lead_ids)}
        other_types = ["seacft", "sertft", "ssa", "seccft", "fu", "fp", "slo", "f"]
        other_weights = [20, 20, 15, 10, 10, 10, 10, 5]
        when = self.start
        follow_up: str | None = None  # a newcomer whose seacft comes next
        for i in range(self.event_count):
            when += timedelta(milliseconds=rng.randint(50, 1500))
            seq = self.first_seq + i
            if follow_up is not None:
                uid, follow_up = follow_up, None
                yield log_event("seacft", user_id=uid, when=when, seq=seq, rng=rng, user_name=emails[uid])
                continue
            if i in starts:
                uid = follow_up = starts[i]
                yield log_event("s", user_id=uid, when=when, seq=seq, rng=rng, user_name=emails[uid])
                continue
            if i % 2 == 0:
                uid = rng.choice(self.seen_user_ids)
                t = rng.choices(["s", "scoa", "sepft"], [8, 1, 1])[0]
            else:
                t = rng.choices(other_types, other_weights)[0]
                uid = None if t in ("seccft", "fu") or (t == "f" and rng.random() < 0.5) else rng.choice(self.seen_user_ids)
            yield log_event(t, user_id=uid, when=when, seq=seq, rng=rng)


def day_later_scenario(base: BenchScenario, events: int = 20_000, new_share: float = 0.01, seed: int = 2) -> DayLaterScenario:
    """`base`'s tenant a day later: `events` new log events, `new_share` of them from users never seen
    before (who all need a lead), the rest from users who signed in during `base`."""
    if not 0 <= new_share <= 1:
        raise ValueError("new_share is a fraction between 0 and 1")
    newcomers = round(events * new_share) // 2
    if newcomers * 2 > events:
        raise ValueError("not enough events for the newcomers")
    seen = sorted({e["user_id"] for e in base.events() if e["type"] in LOGIN_TYPES and e.get("user_id")})
    rng = random.Random(f"day-later-users:{seed}")
    users = []
    for i in range(newcomers):
        given, family = rng.choice(_FIRST), rng.choice(_LAST)
        email = f"{_ascii_slug(given)}.{_ascii_slug(family)}.new{i}@example.com"
        users.append(user_profile(_new_user_id(rng, "auth0"), email=email, given_name=given, family_name=family))
    ids = [u["user_id"] for u in users]
    expected = {"eligible_user_ids": sorted(ids), "event_count": events}
    return DayLaterScenario(users=users, event_count=events, need_lead_ids=ids, seen_user_ids=seen, seed=seed,
                            start=base.start + timedelta(days=1), first_seq=base.event_count + 1, expected=expected)
