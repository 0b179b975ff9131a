"""An Auth0 tenant for the sandbox: the token endpoint and the Management API routes the poller uses.

It answers the way the real tenant does (see shared/reference/auth0.md): bare arrays for checkpoint
reads plus a `Link: <...>; rel="next"` header, `q` and everything else ignored when `from` is given,
the 1,000-record cap of search, Auth0's error bodies, scopes per endpoint, expiring opaque tokens,
first-level merge of metadata on PATCH (null deletes a key, an empty object wipes the whole metadata),
and, when asked for, token-bucket rate limits with `x-ratelimit-*` headers and 429s.
"""

from __future__ import annotations

import bisect
import copy
import json
import math
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from . import lucene
from .server import Emulator, Request, Response

__all__ = ["Auth0Emulator", "RateLimits", "TokenBucket", "log_sort_key"]

DEFAULT_SCOPES = ("read:logs", "read:users", "update:users_app_metadata")

LOG_SCOPES = ("read:logs", "read:logs_users")
USER_READ_SCOPES = ("read:users", "read:current_user", "read:user_idp_tokens")
USER_UPDATE_SCOPES = ("update:users", "update:users_app_metadata", "update:current_user_metadata")

CHECKPOINT_DOCS = (
    "https://auth0.com/docs/logs/retrieve-log-events-using-mgmt-api#retrieve-logs-by-checkpoint"
)
USER_SEARCH_LIMIT_DOCS = "https://auth0.com/docs/users/search/v3/view-search-results-by-page#limitation"
MAX_SEARCH_RECORDS = 1000

# PATCH keys Auth0 accepts that are instructions, not profile attributes.
_PATCH_NON_PROFILE = {"password", "connection", "client_id", "verify_email", "verify_phone_number", "verify_password"}


def log_sort_key(log_id: str) -> tuple[int, str]:
    """Numeric order of decimal log ids without converting 56-digit strings."""
    return (len(log_id), log_id)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(status: int, error: str, message: str, error_code: str | None = None, headers=None) -> Response:
    body: dict[str, Any] = {"statusCode": status, "error": error, "message": message}
    if error_code:
        body["errorCode"] = error_code
    return Response(status, body, dict(headers or {}))


def _bad_request(message: str, error_code: str = "invalid_query_string") -> Response:
    return _error(400, "Bad Request", message, error_code)


# --- rate limits --------------------------------------------------------------------------------


class TokenBucket:
    """Auth0's rate-limit algorithm: a bucket of `capacity` tokens refilled at `per_second`.

    `time_scale` speeds the refill up (a benchmark sees the real *shape* of the limit in seconds).
    All times come from `clock` (UNIX seconds), so a test can drive it without sleeping.
    """

    def __init__(self, capacity: int, per_second: float, *, clock: Callable[[], float] = time.time,
                 time_scale: float = 1.0) -> None:
        if capacity < 1 or per_second <= 0 or time_scale <= 0:
            raise ValueError("capacity >= 1, per_second > 0 and time_scale > 0 are required")
        self.capacity = int(capacity)
        self.per_second = float(per_second)
        self.time_scale = float(time_scale)
        self._clock = clock
        self._tokens = float(capacity)
        self._updated = clock()

    @property
    def rate(self) -> float:
        """Tokens added per (real) second."""
        return self.per_second * self.time_scale

    def _refill(self, now: float) -> None:
        if now > self._updated:
            # rounded so that float noise (1102.1 - 1102.0 = 0.0999...) does not withhold a due token
            self._tokens = min(float(self.capacity), round(self._tokens + (now - self._updated) * self.rate, 9))
        self._updated = max(self._updated, now)

    def _reset_at(self, now: float) -> int:
        if self._tokens >= self.capacity:
            return int(math.ceil(now))
        missing = 1.0 - (self._tokens - math.floor(self._tokens))
        return int(math.ceil(now + missing / self.rate))

    def take(self) -> tuple[bool, int, int]:
        """Try to spend one token: (allowed, remaining, reset_epoch_seconds)."""
        now = self._clock()
        self._refill(now)
        allowed = self._tokens >= 1.0
        if allowed:
            self._tokens -= 1.0
        return allowed, int(math.floor(self._tokens)), self._reset_at(now)

    def peek(self) -> tuple[int, int]:
        """(remaining, reset_epoch_seconds) without spending anything."""
        now = self._clock()
        self._refill(now)
        return int(math.floor(self._tokens)), self._reset_at(now)

    def headers(self, remaining: int, reset: int) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(self.capacity),
            "x-ratelimit-remaining": str(remaining),
            "x-ratelimit-reset": str(reset),
        }


@dataclass
class RateLimits:
    """Per endpoint group `(burst, sustained per second)`; defaults are the Essentials/Professional plan."""

    logs: tuple[int, float] = (10, 100 / 60)
    users_read: tuple[int, float] = (40, 500 / 60)
    users_write: tuple[int, float] = (20, 200 / 60)
    other: tuple[int, float] = (10, 150 / 60)
    time_scale: float = 1.0
    # One bucket for the whole Management API (the Free plan; Enterprise's global limit), sized as
    # `other`, instead of one per endpoint group.
    shared: bool = False

    GROUPS = ("logs", "users_read", "users_write", "other")

    @classmethod
    def essentials(cls, time_scale: float = 1.0) -> "RateLimits":
        return cls(time_scale=time_scale)

    @classmethod
    def free(cls, time_scale: float = 1.0) -> "RateLimits":
        return cls(other=(2, 2.0), time_scale=time_scale, shared=True)

    @classmethod
    def enterprise(cls, time_scale: float = 1.0) -> "RateLimits":
        return cls(other=(50, 16.0), time_scale=time_scale, shared=True)

    def buckets(self, clock: Callable[[], float]) -> dict[str, TokenBucket]:
        if self.shared:
            bucket = TokenBucket(*self.other, clock=clock, time_scale=self.time_scale)
            return {group: bucket for group in self.GROUPS}
        return {
            group: TokenBucket(*getattr(self, group), clock=clock, time_scale=self.time_scale)
            for group in self.GROUPS
        }


@dataclass
class _Token:
    scopes: frozenset[str]
    expires_at: float
    generation: int


# --- the emulator -------------------------------------------------------------------------------


class Auth0Emulator(Emulator):
    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        token_lifetime: int = 86400,
        rate_limits: RateLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.scopes = tuple(scopes)
        self.token_lifetime = token_lifetime
        self.clock = clock
        self.users: dict[str, dict] = {}
        self.logs: list[dict] = []
        self._log_keys: list[tuple[int, str]] = []
        self.tokens_issued = 0
        self.issued_tokens: list[str] = []  # every access token handed out (tests look for leaks)
        self.count_429: dict[str, int] = {group: 0 for group in RateLimits.GROUPS}
        self.search_index_lag: set[str] = set()  # user ids the search index does not return yet
        self._tokens: dict[str, _Token] = {}
        self._generation = 0  # tokens of an older generation are expired (expire_tokens())
        self._rate_limits: RateLimits | None = None
        self._buckets: dict[str, TokenBucket] = {}
        self.rate_limits = rate_limits

        self.route("POST", r"/oauth/token", self._token)
        self.route("GET", r"/api/v2/logs", self._api("logs", LOG_SCOPES, self._get_logs))
        self.route("GET", r"/api/v2/logs/(?P<id>[^/]+)", self._api("logs", LOG_SCOPES, self._get_log))
        self.route("GET", r"/api/v2/users", self._api("users_read", ("read:users",), self._search_users))
        self.route("GET", r"/api/v2/users/(?P<id>[^/]+)", self._api("users_read", USER_READ_SCOPES, self._get_user))
        self.route(
            "PATCH", r"/api/v2/users/(?P<id>[^/]+)", self._api("users_write", USER_UPDATE_SCOPES, self._patch_user)
        )

    # --- data ---------------------------------------------------------------------------------

    def add_users(self, users: Iterable[dict]) -> None:
        with self._lock:
            for user in users:
                self.users[user["user_id"]] = copy.deepcopy(user)

    def add_logs(self, events: Iterable[dict]) -> None:
        """Add events (any order); `.logs` stays sorted by log_id. Appending newer ids is O(new).

        Events are stored as given, not copied (a benchmark adds 200,000 of them): the emulator never
        mutates a log event, and callers must not either once it is added.
        """
        new = sorted(events, key=lambda e: log_sort_key(e["log_id"]))
        if not new:
            return
        with self._lock:
            self._sync_log_keys()
            if not self.logs or log_sort_key(new[0]["log_id"]) > self._log_keys[-1]:
                self.logs.extend(new)
                self._log_keys.extend(log_sort_key(e["log_id"]) for e in new)
            else:
                self.logs.extend(new)
                self.logs.sort(key=lambda e: log_sort_key(e["log_id"]))
                self._log_keys = [log_sort_key(e["log_id"]) for e in self.logs]

    def _sync_log_keys(self) -> None:
        # Someone may have appended to .logs directly; rebuild the index then (and sort).
        if len(self._log_keys) != len(self.logs):
            self.logs.sort(key=lambda e: log_sort_key(e["log_id"]))
            self._log_keys = [log_sort_key(e["log_id"]) for e in self.logs]

    # --- tokens -------------------------------------------------------------------------------

    @property
    def scopes(self) -> tuple[str, ...]:
        """The scopes the NEXT token gets (tokens already issued keep theirs)."""
        return self._scopes

    @scopes.setter
    def scopes(self, value: Iterable[str] | str) -> None:
        self._scopes = tuple(value.split()) if isinstance(value, str) else tuple(value)

    def expire_tokens(self) -> None:
        """Every token issued so far is now expired; the next API call with one gets a 401."""
        with self._lock:
            self._generation += 1

    @property
    def rate_limits(self) -> RateLimits | None:
        return self._rate_limits

    @rate_limits.setter
    def rate_limits(self, value: RateLimits | None) -> None:
        with self._lock:
            self._rate_limits = value
            self._buckets = value.buckets(self.clock) if value is not None else {}

    def _token(self, request: Request) -> Response:
        ctype = request.headers.get("content-type", "")
        try:
            if "json" in ctype:
                body = request.json() or {}
            else:
                body = request.form()
        except (ValueError, UnicodeDecodeError):
            return Response(400, {"error": "invalid_request", "error_description": "Invalid request body"})
        if not isinstance(body, dict):
            return Response(400, {"error": "invalid_request", "error_description": "Invalid request body"})
        grant_type = body.get("grant_type")
        if not grant_type:
            return Response(
                400, {"error": "invalid_request", "error_description": "Missing required parameter: grant_type"}
            )
        if grant_type != "client_credentials":
            return Response(
                403,
                {"error": "unauthorized_client",
                 "error_description": f"Grant type '{grant_type}' not allowed for the client."},
            )
        if body.get("client_id") != self.client_id or body.get("client_secret") != self.client_secret:
            return Response(401, {"error": "access_denied", "error_description": "Unauthorized"})
        audience = body.get("audience")
        if audience != f"https://{self.host}/api/v2/":
            return Response(
                403, {"error": "access_denied", "error_description": f"Service not enabled within domain: {audience}"}
            )
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = _Token(frozenset(self.scopes), self.clock() + self.token_lifetime, self._generation)
            self.tokens_issued += 1
            self.issued_tokens.append(token)
            scopes = " ".join(self.scopes)
        return Response(
            200,
            {"access_token": token, "expires_in": self.token_lifetime, "scope": scopes, "token_type": "Bearer"},
            {"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    def _authenticate(self, request: Request, accepted: tuple[str, ...]) -> tuple[Response | None, frozenset[str]]:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            return _error(401, "Unauthorized", "Missing authentication", "invalid_token"), frozenset()
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "Unauthorized", "Bad HTTP authentication header format", "invalid_token"), frozenset()
        with self._lock:
            info = self._tokens.get(token.strip())
            generation = self._generation
        if info is None:
            return _error(401, "Unauthorized", "Invalid token", "invalid_token"), frozenset()
        if info.generation != generation or self.clock() >= info.expires_at:
            return (
                _error(401, "Unauthorized", "Expired token received for JSON Web Token validation", "invalid_token"),
                frozenset(),
            )
        if not info.scopes.intersection(accepted):
            return _insufficient_scope(accepted), info.scopes
        return None, info.scopes

    # --- rate limiting + auth wrapper ---------------------------------------------------------

    def _api(self, group: str, accepted: tuple[str, ...], handler: Callable[..., Response]):
        def wrapped(request: Request) -> Response:
            limit_headers: dict[str, str] = {}
            with self._lock:
                bucket = self._buckets.get(group)
                if bucket is not None:
                    allowed, remaining, reset = bucket.take()
                    limit_headers = bucket.headers(remaining, reset)
                    if not allowed:
                        self.count_429[group] = self.count_429.get(group, 0) + 1
                        return _error(
                            429, "Too Many Requests", "Global limit has been reached", "too_many_requests",
                            limit_headers,
                        )
            denied, scopes = self._authenticate(request, accepted)
            response = denied if denied is not None else handler(request, scopes)
            response.headers.update(limit_headers)
            return response

        return wrapped

    def common_headers(self, request: Request, response: Response) -> dict[str, str]:
        # Scripted faults (and unknown /api/v2 routes) bypass the handlers; they still carry the headers.
        if not request.path.startswith("/api/v2/") or "x-ratelimit-limit" in response.headers:
            return {}
        with self._lock:
            bucket = self._buckets.get(_group_of(request))
            if bucket is None:
                return {}
            return bucket.headers(*bucket.peek())

    # --- logs ---------------------------------------------------------------------------------

    def _get_logs(self, request: Request, scopes: frozenset[str]) -> Response:
        if "from" in request.query:
            return self._logs_by_checkpoint(request)
        return self._search_logs(request)

    def _logs_by_checkpoint(self, request: Request) -> Response:
        checkpoint = request.query["from"]
        if not checkpoint.isdigit() or not checkpoint.isascii():
            return _bad_request(
                "Query validation error: 'String does not match pattern ^\\d+$' on property from "
                "(Log Event Id from which to start selection from).",
                "invalid_uri",
            )
        take_raw = request.query.get("take", "50")
        try:
            take = int(take_raw)
        except ValueError:
            return _bad_request(
                f"Query validation error: 'Expected type integer but found type string' on property take "
                f"(Number of entries to retrieve when using the from parameter.).",
                "invalid_uri",
            )
        if take < 0:
            return _bad_request(
                "Query validation error: 'Value must be greater than or equal to 0' on property take.", "invalid_uri"
            )
        take = min(take, 100)
        with self._lock:
            self._sync_log_keys()
            start = bisect.bisect_right(self._log_keys, log_sort_key(checkpoint))
            page = self.logs[start:start + take]  # events are never mutated: no copy needed
        next_from = page[-1]["log_id"] if page else checkpoint
        link = f'<https://{self.host}/api/v2/logs?from={next_from}&take={take}>; rel="next"'
        return Response(200, page, {"Link": link})

    def _search_logs(self, request: Request) -> Response:
        paging = _paging(request.query)
        if isinstance(paging, Response):
            return paging
        page, per_page, include_totals = paging
        if (page + 1) * per_page > MAX_SEARCH_RECORDS:
            return _bad_request(
                f"Requesting page {page + 1} exceeds the allowed maximum of {MAX_SEARCH_RECORDS} records: "
                f"please consider searching by checkpoint {CHECKPOINT_DOCS}",
                "invalid_paging",
            )
        try:
            predicate = lucene.compile_query(request.query.get("q", ""))
        except lucene.QueryError as exc:
            return _bad_request(f"Query validation error: {exc}")
        sort = _parse_sort(request.query.get("sort"))
        if isinstance(sort, Response):
            return sort
        with self._lock:
            self._sync_log_keys()
            found = [e for e in self.logs if predicate(e)]
            if sort is not None:
                name, direction = sort
                # Ties keep log_id order; events without the field sort last either way.
                found.sort(key=lambda e: log_sort_key(e["log_id"]), reverse=direction < 0)
                present = [e for e in found if e.get(name) is not None]
                absent = [e for e in found if e.get(name) is None]
                present.sort(key=lambda e: _sortable(e.get(name)), reverse=direction < 0)
                found = present + absent
            total = len(found)
            items = found[page * per_page:(page + 1) * per_page]
        items = _project(items, request.query)
        if include_totals:
            return Response(
                200, {"start": page * per_page, "limit": per_page, "length": len(items), "total": total, "logs": items}
            )
        return Response(200, items)

    def _get_log(self, request: Request, scopes: frozenset[str]) -> Response:
        log_id = request.params["id"]
        with self._lock:
            self._sync_log_keys()
            i = bisect.bisect_left(self._log_keys, log_sort_key(log_id))
            if i < len(self.logs) and self.logs[i]["log_id"] == log_id:
                return Response(200, _project([self.logs[i]], request.query)[0])
        return _error(404, "Not Found", "log not found", "inexistent_log")

    # --- users --------------------------------------------------------------------------------

    def _get_user(self, request: Request, scopes: frozenset[str]) -> Response:
        with self._lock:
            user = copy.deepcopy(self.users.get(request.params["id"]))
        if user is None:
            return _user_not_found()
        return Response(200, _project([user], request.query)[0])

    def _patch_user(self, request: Request, scopes: frozenset[str]) -> Response:
        try:
            body = request.json()
        except (ValueError, UnicodeDecodeError):
            return _bad_request("Invalid request payload JSON format", "invalid_body")
        if not isinstance(body, dict):
            found = "array" if isinstance(body, list) else "null" if body is None else type(body).__name__
            return _bad_request(f"Payload validation error: 'Expected type object but found type {found}'.",
                                "invalid_body")
        if not body:
            return _bad_request("Payload validation error: 'Too few properties defined (0), minimum 1'.",
                                "invalid_body")
        for key in ("app_metadata", "user_metadata"):
            if key in body and not isinstance(body[key], dict):
                found = "null" if body[key] is None else type(body[key]).__name__
                return _bad_request(
                    f"Payload validation error: 'Expected type object but found type {found}' on property {key}.",
                    "invalid_body",
                )
        if "update:users" not in scopes:
            allowed = {"update:users_app_metadata": {"app_metadata"},
                       "update:current_user_metadata": {"user_metadata"}}
            permitted = set().union(*(allowed.get(s, set()) for s in scopes))
            if not set(body) <= permitted:
                return _insufficient_scope(("update:users",))
        with self._lock:
            user = self.users.get(request.params["id"])
            if user is None:
                return _user_not_found()
            for key, value in body.items():
                if key in ("app_metadata", "user_metadata"):
                    if value == {}:
                        user.pop(key, None)  # Auth0: an empty object removes the metadata completely
                        continue
                    stored = user.get(key)
                    # A stored value that is not an object (seeded odd data) is replaced, not merged.
                    merged = dict(stored) if isinstance(stored, dict) else {}
                    for k, v in value.items():  # first level only: nested objects replace whole
                        if v is None:
                            merged.pop(k, None)
                        else:
                            merged[k] = v
                    if merged:
                        user[key] = merged
                    else:
                        user.pop(key, None)
                elif key in _PATCH_NON_PROFILE or key == "user_id":
                    continue
                elif value is None:
                    user.pop(key, None)
                else:
                    user[key] = value
            user["updated_at"] = _iso(self.clock())
            result = copy.deepcopy(user)
        return Response(200, result)

    def _search_users(self, request: Request, scopes: frozenset[str]) -> Response:
        engine = request.query.get("search_engine", "v3")
        if engine not in ("v1", "v2", "v3"):
            return _bad_request(
                "Query validation error: 'No enum match for: \"%s\"' on property search_engine." % engine,
                "invalid_query_string",
            )
        paging = _paging(request.query)
        if isinstance(paging, Response):
            return paging
        page, per_page, include_totals = paging
        if (page + 1) * per_page > MAX_SEARCH_RECORDS:
            return _bad_request(
                f"You can only page through the first {MAX_SEARCH_RECORDS} records. See {USER_SEARCH_LIMIT_DOCS}",
                "invalid_paging",
            )
        try:
            query = lucene.parse(request.query.get("q", ""))
        except lucene.QueryError as exc:
            return _bad_request(f"Query validation error: {exc}")
        ci = frozenset(lucene.DEFAULT_CASE_INSENSITIVE)

        def predicate(user: dict) -> bool:
            return lucene.matches(query, user, case_insensitive_fields=ci)

        sort = _parse_sort(request.query.get("sort"))
        if isinstance(sort, Response):
            return sort
        # Users by id (the batched profile read) come from the index, not a scan: a benchmark tenant
        # has many thousands of users.
        ids = lucene.exact_values(query, "user_id")
        with self._lock:
            if ids is not None:
                candidates = ((uid, self.users[uid]) for uid in sorted(ids) if uid in self.users)
            else:
                candidates = iter(self.users.items())
            found = [u for uid, u in candidates if uid not in self.search_index_lag and predicate(u)]
            if sort is not None:
                name, direction = sort
                present = [u for u in found if u.get(name) is not None]
                absent = [u for u in found if u.get(name) is None]
                present.sort(key=lambda u: _sortable(u.get(name)), reverse=direction < 0)
                found = present + absent
            total = len(found)
            items = copy.deepcopy(found[page * per_page:(page + 1) * per_page])
        items = _project(items, request.query)
        if include_totals:
            return Response(
                200,
                {"start": page * per_page, "limit": per_page, "length": len(items), "total": total, "users": items},
            )
        return Response(200, items)


# --- helpers ------------------------------------------------------------------------------------


def _group_of(request: Request) -> str:
    path = request.path
    if path == "/api/v2/logs" or path.startswith("/api/v2/logs/"):
        return "logs"
    if path == "/api/v2/users" or (path.startswith("/api/v2/users/") and path.count("/") == 4):
        return "users_write" if request.method in ("PATCH", "POST", "DELETE") else "users_read"
    return "other"


def _insufficient_scope(accepted: Iterable[str]) -> Response:
    return _error(
        403, "Forbidden", f"Insufficient scope, expected any of: {','.join(accepted)}", "insufficient_scope"
    )


def _user_not_found() -> Response:
    return _error(404, "Not Found", "The user does not exist.", "inexistent_user")


def _paging(query: dict[str, str]) -> tuple[int, int, bool] | Response:
    values = {}
    for name, default, maximum in (("page", 0, None), ("per_page", 50, 100)):
        raw = query.get(name)
        if raw is None or raw == "":
            values[name] = default
            continue
        try:
            value = int(raw)
        except ValueError:
            return _bad_request(
                f"Query validation error: 'Expected type integer but found type string' on property {name}.",
                "invalid_query_string",
            )
        if value < 0:
            return _bad_request(
                f"Query validation error: 'Value must be greater than or equal to 0' on property {name}.",
                "invalid_query_string",
            )
        if maximum is not None and value > maximum:
            return _bad_request(
                f"Query validation error: 'Value must be lower than or equal to {maximum}' on property {name}.",
                "invalid_query_string",
            )
        values[name] = value
    include_totals = query.get("include_totals", "false").lower() == "true"
    return values["page"], values["per_page"], include_totals


def _parse_sort(raw: str | None) -> tuple[str, int] | None | Response:
    if not raw:
        return None
    name, _, direction = raw.partition(":")
    if not name or direction not in ("1", "-1"):
        return _bad_request(
            "Query validation error: 'String does not match pattern ^(([a-zA-Z0-9_\\.]+))\\:(1|-1)$' on property sort.",
            "invalid_query_string",
        )
    return name, int(direction)


def _sortable(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, (int, float)):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, json.dumps(value, sort_keys=True))


def _project(items: list[dict], query: dict[str, str]) -> list[dict]:
    """Apply `fields` / `include_fields` (top-level fields, comma-separated)."""
    raw = query.get("fields")
    if not raw:
        return items
    names = {f.strip() for f in raw.split(",") if f.strip()}
    include = query.get("include_fields", "true").lower() != "false"
    if include:
        return [{k: v for k, v in item.items() if k in names} for item in items]
    return [{k: v for k, v in item.items() if k not in names} for item in items]

