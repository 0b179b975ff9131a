"""The only module that talks to Auth0: the Management API token, logs by checkpoint, users, write-back.

Why not `client.logs.list()`: auth0-python 6.x cannot read logs by checkpoint. It has no `from` /
`take`, always adds `page`/`per_page`/`include_totals`, and fails to parse the bare JSON array the API
returns in checkpoint mode (shared/reference/auth0.md §9). So log pages are read with the same
`httpx.Client` the SDK uses (same TLS trust, timeouts, rate-limit observation), sending exactly
`from` and `take`. User reads and the write-back go through the SDK (`users.get`, `users.update`),
with its own retries off: retrying is decided here, from the table in `failures.py`.

Every failure leaves this module as one of the errors in `errors.py`.
"""

from __future__ import annotations

import re
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

import httpx
from auth0.management import Auth0
from auth0.management.core.api_error import ApiError
from auth0.management.core.parse_error import ParsingError

from poller import failures
from poller.config import Auth0Config, HttpConfig
from poller.errors import FatalError, Interrupted, PermanentError, RetriableError
from poller.failures import Next
from poller.logs import get_logger, register_secret
from poller.pacing import Interrupt, RateGate, retry_after_seconds

T = TypeVar("T")
log = get_logger("poller.auth0")

PAGE_SIZE = 100  # the API's maximum `take` (and `per_page` of a search)
SEARCH_CAP = 1000  # log search and user search return at most 1,000 results per query
# Users not yet flagged, in Auth0's documented form (a pure negative query is not documented).
UNFLAGGED_USERS = "(NOT _exists_:app_metadata.recordedAsLead OR app_metadata.recordedAsLead:false)"
# Characters of a user search's q, URL-encoded. Auth0 documents no limit; long URLs get 414 from
# proxies past about 8 KB, so stay well under.
MAX_SEARCH_QUERY = 6_000
# How far after its date a log may be given its id (ingest), and how many search pages (of the
# 1,000 results a search gives) find_start looks through for the smallest id in that window.
INGEST_SKEW = timedelta(seconds=60)
START_SEARCH_PAGES = 10
SAME_CALL_RETRIES = 2  # quick retries of an idempotent call on 5xx/timeouts before it counts as a failure


class UserNotFound(PermanentError):
    def __init__(self, user_id: str) -> None:
        super().__init__(f"Auth0 has no user {user_id}", code="user_not_found")


def _endpoint_group(method: str, path: str) -> str:
    """Auth0's rate-limit groups (Essentials/Professional): logs, user reads, user writes, the rest."""
    if path.startswith("/api/v2/logs"):
        return "logs"
    if path.startswith("/api/v2/users"):
        return "users_read" if method == "GET" else "users_write"
    if path.startswith("/oauth/token"):
        return "token"
    return "other"


def _error_code(body: Any) -> str | None:
    if isinstance(body, dict):
        code = body.get("errorCode") or body.get("error")
        return code if isinstance(code, str) else None
    return None


def _error_message(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("message", "error_description", "error"):
            if isinstance(body.get(key), str):
                return body[key]
    text = str(body or "").strip()
    return text[:200] if text else "no details"


class _Token:
    """The Management API token: fetched by client credentials, cached until shortly before it expires."""

    def __init__(self, fetch: Callable[[], tuple[str, float]], clock: Callable[[], float]) -> None:
        self._fetch = fetch
        self._clock = clock
        self._value: str | None = None
        self._refresh_at = 0.0
        self._lock = threading.Lock()
        self.fetched = 0

    def get(self) -> str:
        return self.issue()[0]

    def issue(self) -> tuple[str, int]:
        """The token and its generation (how many tokens were fetched before it, itself included)."""
        with self._lock:
            if self._value is None or self._clock() >= self._refresh_at:
                value, expires_in = self._fetch()
                register_secret(value)
                self.fetched += 1
                # Renew at 90% of the lifetime (at most 10 minutes early), never keeping an expiring token.
                self._refresh_at = self._clock() + max(0.0, expires_in - min(600.0, expires_in * 0.1))
                self._value = value
            return self._value, self.fetched

    def invalidate(self, generation: int) -> None:
        """Drop the token of `generation` after a 401. Calls that ran side by side all get the 401
        of one expired token; the first drops it, the rest find a newer one already there (one new
        token, not one per call: Auth0 counts machine-to-machine tokens against a monthly quota)."""
        with self._lock:
            if generation == self.fetched:
                self._value = None


class Auth0Source:
    """LogSource and UserDirectory for one Auth0 tenant."""

    def __init__(
        self,
        config: Auth0Config,
        http: HttpConfig,
        *,
        interrupt: Interrupt,
        concurrency: int = 4,
        clock: Callable[[], float] = time.time,
        gate: RateGate | None = None,
    ) -> None:
        self.config = config
        self.base_url = f"https://{config.domain}"
        self.interrupt = interrupt
        self.clock = clock
        self.gate = gate or RateGate(clock=clock)
        self.calls: dict[str, int] = {}
        self.rate_limited: int = 0
        self.granted_scopes: frozenset[str] | None = None  # from the last token response's `scope`
        self._calls_lock = threading.Lock()
        self._http = httpx.Client(
            base_url=self.base_url,
            verify=ssl.create_default_context(cafile=str(http.ca_bundle)) if http.ca_bundle else True,
            timeout=httpx.Timeout(http.timeout_seconds, connect=http.connect_timeout_seconds),
            event_hooks={"response": [self._observe]},
            headers={"User-Agent": "lead-poller"},
            follow_redirects=False,
        )
        self._token = _Token(self._fetch_token, clock)
        self._sdk = Auth0(base_url=f"{self.base_url}/api/v2", token=self._token.get, httpx_client=self._http, max_retries=0)
        # Reads and write-backs have rate-limit buckets of their own, and run side by side (the cycle
        # writes back one batch while it reads the next): a worker waiting for the write bucket must
        # not hold up a read.
        self._read_pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="auth0-read")
        self._write_pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="auth0-write")

    def close(self) -> None:
        self._read_pool.shutdown(wait=True, cancel_futures=True)
        self._write_pool.shutdown(wait=True, cancel_futures=True)
        self._http.close()

    # --- plumbing -----------------------------------------------------------------------------

    def _bucket(self, group: str) -> str:
        """The rate-limit bucket an endpoint group spends: its own, or the whole Management API's
        (`rate_limit_buckets = "global"`: Free, Enterprise), where pacing each group on its own
        would overdraw the one bucket. The token endpoint is the Authentication API's."""
        return "management" if self.config.rate_limit_buckets == "global" and group != "token" else group

    def _observe(self, response: httpx.Response) -> None:
        group = _endpoint_group(response.request.method, response.request.url.path)
        with self._calls_lock:
            self.calls[group] = self.calls.get(group, 0) + 1
        self.gate.observe(self._bucket(group), response.headers)

    def _fetch_token(self) -> tuple[str, float]:
        def send() -> httpx.Response:
            response = self._http.post(
                "/oauth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": self.config.client_id,
                    "client_secret": self.config.client_secret,
                    "audience": f"{self.base_url}/api/v2/",
                },
            )
            _raise_for_status(response)
            return response

        response = self._call("token", "token", send, idempotent=True)
        try:
            body = response.json()
            token, expires_in = str(body["access_token"]), float(body.get("expires_in") or 86400)
            scope = body.get("scope")
            self.granted_scopes = frozenset(scope.split()) if isinstance(scope, str) else None
            return token, expires_in
        except (ValueError, KeyError, TypeError, AttributeError):
            raise RetriableError("Auth0 answered the token request without an access_token", code="auth0_unexpected") from None

    def _call(self, group: str, operation: str, send: Callable[[], T], *, idempotent: bool) -> T:
        """Run one API call under the failure table: wait out 429s, refresh the token once on 401,
        retry idempotent calls briefly on 5xx and network errors, and translate everything else."""
        refreshed = False
        quick_retries = 0
        waits = 0
        while True:
            # The token this attempt uses (fetched now if needed), so a 401 drops that one only.
            generation = self._token.issue()[1] if operation != "token" else 0
            try:
                return self._send(group, send)
            except ApiError as exc:
                status, headers, body = exc.status_code or 0, exc.headers or {}, exc.body
                rule = failures.lookup("auth0", operation, status, _error_code(body))
                detail = _error_message(body)
            except httpx.TimeoutException:
                status, headers, body, detail = 0, {}, None, "timed out"
                rule = failures.lookup("auth0", operation, "timeout")
            except (httpx.DecodingError, ValueError, UnicodeError) as exc:
                # A body that does not decode (a wrong Content-Encoding, a number too long for
                # Python's JSON parser), a header that is not ASCII: an unexpected answer.
                status, headers, body, detail = 0, {}, None, f"{type(exc).__name__}: {str(exc)[:200]}"
                rule = failures.lookup("auth0", operation, "*")
            except httpx.TransportError as exc:
                status, headers, body = 0, {}, None
                detail = f"{type(exc).__name__} to {self.config.domain}: {str(exc)[:200] or 'no details'}"
                rule = failures.lookup("auth0", operation, "tls" if failures.untrusted_certificate(exc) else "connection")

            if rule.next is Next.WAIT:
                self.rate_limited += 1
                waits += 1
                delay = retry_after_seconds(headers, self.clock(), attempt=waits)
                log.warning("auth0_rate_limited", operation=operation, wait_seconds=round(delay, 2))
                if self.interrupt.sleep(delay + 0.05):
                    continue
                raise RetriableError(f"Auth0 rate limit on {operation}; the deadline came first", code=rule.code, delay=delay, counts_as_attempt=False)
            if rule.next is Next.REFRESH and not refreshed and operation != "token":
                refreshed = True
                self._token.invalidate(generation)
                continue
            if rule.next is Next.REFRESH:
                raise FatalError(f"Auth0 rejected a freshly issued token ({detail}); check the application's API authorisation", code=rule.code, exit_code=rule.exit_code)
            retry = rule.next in (Next.RETRY, Next.OUTAGE)
            if retry and idempotent and quick_retries < SAME_CALL_RETRIES and not self.interrupt.should_stop:
                quick_retries += 1
                if self.interrupt.sleep(0.5 * quick_retries):
                    continue
            if retry:
                answer = f"HTTP {status}" if status else "no answer"
                raise RetriableError(f"Auth0 {operation}: {detail} ({answer})", code=rule.code, can_fail=rule.next is Next.RETRY)
            if rule.next is Next.FATAL:
                raise FatalError(f"Auth0 {operation}: {rule.explanation} ({detail})", code=rule.code, exit_code=rule.exit_code)
            if rule.next is Next.NOT_FOUND:
                raise _NotFoundSignal()
            raise PermanentError(f"Auth0 {operation}: {detail}", code=rule.code)

    def _send(self, group: str, send: Callable[[], T]) -> T:
        """One attempt, paced by the rate gate (which sees the answer through the response hook)."""
        bucket = self._bucket(group)
        if self.interrupt.stopping or not self.gate.acquire(bucket, self.interrupt):
            raise Interrupted()
        try:
            return send()
        finally:
            self.gate.release(bucket)

    # --- logs ---------------------------------------------------------------------------------

    def read_page(self, checkpoint: str) -> tuple[list[dict[str, Any]], str | None]:
        """The next page after `checkpoint`: its events in API order, and the next checkpoint
        (the last `log_id` of the page; None when the page is empty)."""

        def send() -> httpx.Response:
            response = self._http.get("/api/v2/logs", params={"from": checkpoint, "take": PAGE_SIZE}, headers=self._auth())
            _raise_for_status(response)
            return response

        response = self._call("logs", "logs", send, idempotent=True)
        body = _json_or_none(response)
        if isinstance(body, dict) and isinstance(body.get("logs"), list):
            body = body["logs"]  # the paginated object form; checkpoint mode should not send it
        if not isinstance(body, list):
            raise RetriableError("Auth0 answered a log page that is not a JSON array", code="auth0_unexpected")
        events = [e for e in body if isinstance(e, dict)]
        next_checkpoint = None
        for event in reversed(events):
            log_id = event.get("log_id") or event.get("_id")
            if _is_log_id(log_id):
                next_checkpoint = log_id
                break
        if next_checkpoint is None and body:
            # No usable id on the page: Auth0's own instruction is to follow the Link header's `next`.
            next_checkpoint = _from_link(response.headers.get("link"))
            if next_checkpoint is None:
                # Not the end of the stream (the page was not empty), and no way past it: say so,
                # rather than end the cycle as if everything was read.
                raise RetriableError("Auth0 answered a log page with no usable log_id and no Link to the next one", code="auth0_unexpected")
        return events, next_checkpoint

    def token_scopes(self) -> frozenset[str] | None:
        """Get a token (if none is held) and return the scopes Auth0 granted it; None if the token
        response did not say."""
        self._token.get()
        return self.granted_scopes

    def log_exists(self, log_id: str) -> bool:
        """Whether Auth0 still keeps this log (False once it fell out of the retention window)."""

        def send() -> bool:
            response = self._http.get(f"/api/v2/logs/{quote(log_id, safe='')}", headers=self._auth())
            if response.status_code == 404:
                return False
            _raise_for_status(response)
            return True

        return self._call("logs", "logs", send, idempotent=True)

    def _get_list(self, path: str, params: dict[str, Any], *, group: str, operation: str, key: str, idempotent: bool = True) -> list[dict[str, Any]]:
        """A GET that answers a JSON array (or the paginated `{key: [...]}` form) of objects. Anything
        else (an HTML maintenance page with 200, a truncated body) is not "no results": it would
        turn start_from = "now" into "oldest", or end a backfill early. It is retried."""

        def send() -> httpx.Response:
            response = self._http.get(path, params=params, headers=self._auth())
            _raise_for_status(response)
            return response

        body = _json_or_none(self._call(group, operation, send, idempotent=idempotent))
        if isinstance(body, dict):
            body = body.get(key)
        if not isinstance(body, list):
            raise RetriableError(f"Auth0 answered {path} with something other than a list of {key}", code="auth0_unexpected")
        return [item for item in body if isinstance(item, dict)]

    def _search_logs(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self._get_list("/api/v2/logs", params, group="logs", operation="log_search", key="logs")

    def _search_users(self, params: dict[str, Any], *, idempotent: bool = True) -> list[dict[str, Any]]:
        return self._get_list("/api/v2/users", params, group="users_read", operation="user_search", key="users", idempotent=idempotent)

    def find_start(self, start_from: str) -> tuple[str | None, list[dict[str, Any]]]:
        """Where a state with no checkpoint starts: (checkpoint, events to take in with it).

        now: the newest existing log becomes the checkpoint (earlier logins are not leads).
        oldest: the oldest retained logs, included. An RFC 3339 time: the logs at or after it,
        included. A log_id: that id, as it is.

        Search sorts by date, the stream by log_id, and the two orders differ by a few seconds (a
        log_id is given at ingest). So the checkpoint is set just before the *smallest* log_id among the
        logs dated within INGEST_SKEW of the first (a page of 100 at least, more on a busy tenant):
        the stream then returns that log and every later one, and a log with a smaller id but a
        later date cannot be skipped. `from` needs no existing log: the API
        returns the logs whose id sorts after it (reference/auth0.md §1, §8: Elastic's synthetic ids).
        """
        if start_from == "now":
            newest = self._search_logs({"sort": "date:-1", "per_page": 1, "page": 0})
            if not newest:
                return None, []
            log_id = newest[0].get("log_id") or newest[0].get("_id")
            if not _is_log_id(log_id):
                raise RetriableError("Auth0's newest log has no usable log_id to start from", code="auth0_unexpected")
            return log_id, []
        if start_from.isdigit():
            return start_from, []
        params: dict[str, Any] = {"sort": "date:1", "per_page": PAGE_SIZE}
        if start_from != "oldest":
            params["q"] = f"date:[{_stamp(datetime.fromisoformat(start_from.replace('Z', '+00:00')))} TO *]"
        ids: list[str] = []
        horizon: datetime | None = None
        for page in range(START_SEARCH_PAGES):
            events = self._search_logs({**params, "page": page})
            ids += [e["log_id"] for e in events if _is_log_id(e.get("log_id")) and int(e["log_id"]) > 0]
            dates = [d for d in (_date_of(e) for e in events) if d is not None]
            if horizon is None and dates:
                horizon = dates[0] + INGEST_SKEW
            # A busy tenant logs more than a page within the ingest skew: a log dated later than
            # this page, but given its id sooner, must still be after the checkpoint.
            if len(events) < PAGE_SIZE or horizon is None or not dates or dates[-1] > horizon:
                break
        if not ids:
            return None, []
        smallest = min(ids, key=lambda log_id: (len(log_id), log_id))
        return str(int(smallest) - 1).zfill(len(smallest)), []

    def logs_between(self, since: datetime, until: datetime | None = None) -> Iterator[list[dict[str, Any]]]:
        """Every retained log event with `since` <= date < `until`, a page at a time (log search).

        For `backfill`: the live checkpoint is not involved. A search gives at most 1,000 results, so
        the window is sliced (see `_sliced`)."""
        upper = f"{_stamp(until)}}}" if until else "*]"

        def page(lower: str, number: int) -> list[dict[str, Any]]:
            return self._search_logs({"q": f"date:[{lower} TO {upper}", "sort": "date:1", "per_page": PAGE_SIZE, "page": number})

        return _sliced(page, _stamp(since), order_key="date", id_key="log_id", what="log events")

    def unflagged_users(self) -> Iterator[list[str]]:
        """The ids of every user not yet flagged `recordedAsLead`, a page at a time (user search,
        oldest first, sliced on `created_at` around the 1,000-result limit). For `backfill --users`."""

        def page(lower: str | None, number: int) -> list[dict[str, Any]]:
            query = UNFLAGGED_USERS if lower is None else f"{UNFLAGGED_USERS} AND created_at:[{lower} TO *]"
            params = {
                "q": query,
                "search_engine": "v3",
                "sort": "created_at:1",
                "fields": "user_id,created_at",
                "include_fields": "true",
                "per_page": PAGE_SIZE,
                "page": number,
            }
            try:
                return self._search_users(params)
            except _NotFoundSignal:
                # No user search at all (see the failure table): nothing to enumerate users with.
                raise RetriableError("Auth0 answered the user search 404: backfill --users needs user search", code="auth0_unexpected") from None

        for users in _sliced(page, None, order_key="created_at", id_key="user_id", what="users"):
            yield [u["user_id"] for u in users if isinstance(u.get("user_id"), str) and u["user_id"]]

    # --- users --------------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token.get()}"}

    def get_user(self, user_id: str) -> dict[str, Any]:
        """The user's profile. For a linked secondary identity, the primary user's profile."""

        def send() -> dict[str, Any]:
            try:
                return _profile(self._sdk.users.with_raw_response.get(user_id))
            except ParsingError as exc:
                # The SDK's model refuses odd but real profiles (app_metadata not an object, ...):
                # the raw body is still the profile.
                if exc.status_code and 200 <= exc.status_code < 300 and isinstance(exc.body, dict):
                    return without_lone_surrogates(exc.body)
                raise ApiError(status_code=exc.status_code, headers=exc.headers, body=exc.body) from None

        try:
            return self._call("users_read", "user_read", send, idempotent=True)
        except _NotFoundSignal:
            primary = self._find_primary(user_id)
            if primary is None:
                raise UserNotFound(user_id) from None
            return primary

    def _find_primary(self, user_id: str) -> dict[str, Any] | None:
        provider, _, bare_id = user_id.partition("|")
        if not bare_id:
            return None
        query = f'identities.user_id:"{_lucene_escape(bare_id)}"'
        try:
            users = self._search_users({"q": query, "search_engine": "v3", "per_page": 10})
        except (PermanentError, _NotFoundSignal):
            return None
        for user in users:
            identities = user.get("identities")
            for identity in identities if isinstance(identities, list) else []:
                if isinstance(identity, dict) and str(identity.get("user_id")) == bare_id and identity.get("provider") == provider:
                    return user
        return None

    def search_users(self, user_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Profiles of many users through user search (`user_id:("a" OR "b" ...)`, up to 100 a call).

        Best effort: the search index is eventually consistent, so a user may be missing (new, or
        just changed) or a profile slightly behind; a refused or failed search returns nothing for
        its users. The caller reads exactly (`get_users`) whoever it needs exactly.
        """
        found: dict[str, dict[str, Any]] = {}
        for profiles in self._read_pool.map(self._search_chunk, list(_search_chunks(list(dict.fromkeys(user_ids))))):
            found.update(profiles)
        return found

    def _search_chunk(self, user_ids: list[str]) -> dict[str, dict[str, Any]]:
        params = {"q": _ids_query(user_ids), "search_engine": "v3", "per_page": len(user_ids), "page": 0}
        try:
            # Not retried here: whoever the search cannot give is read one by one instead.
            users = self._search_users(params, idempotent=False)
        except Interrupted:
            return {}
        except (RetriableError, PermanentError, _NotFoundSignal) as exc:
            log.info("auth0_search_fallback", users=len(user_ids), code=getattr(exc, "code", "user_not_found"), error=str(exc))
            return {}
        wanted = set(user_ids)
        return {u["user_id"]: u for u in users if u.get("user_id") in wanted}

    def get_users(self, user_ids: Iterable[str]) -> dict[str, dict[str, Any] | Exception]:
        """Profiles for many users, read concurrently (bounded by the pool and the rate gate)."""
        ids = list(dict.fromkeys(user_ids))
        return dict(zip(ids, self._read_pool.map(lambda uid: _capture(self.get_user, uid), ids)))

    def write_back(self, user_id: str, lead_id: str) -> None:
        """Set app_metadata.recordedAsLead (and the lead id). First-level keys only: Auth0 merges the
        first level of app_metadata, so every other key the user has survives."""
        app_metadata = {"recordedAsLead": True, "salesforceLeadId": lead_id}

        def patch(target: str) -> None:
            send = lambda: _ignore_parsing(lambda: self._sdk.users.with_raw_response.update(target, app_metadata=app_metadata))  # noqa: E731
            self._call("users_write", "user_write", send, idempotent=True)

        try:
            patch(user_id)
        except _NotFoundSignal:
            # A linked secondary identity has no user of its own: the flag belongs on the primary.
            primary = self._find_primary(user_id)
            if primary is None or not isinstance(primary.get("user_id"), str):
                raise UserNotFound(user_id) from None
            try:
                patch(primary["user_id"])
            except _NotFoundSignal:
                raise UserNotFound(user_id) from None

    def write_backs(self, pairs: Iterable[tuple[str, str]]) -> dict[str, Exception | None]:
        items = list(pairs)
        results = self._write_pool.map(lambda pair: _capture(self.write_back, *pair), items)
        return {user_id: (None if result is None else result) for (user_id, _), result in zip(items, results)}


class _NotFoundSignal(Exception):
    """Internal: a 404 whose meaning depends on the caller (a linked account, or a deleted user)."""


def _capture(fn: Callable[..., T], *args: Any) -> T | Exception:
    try:
        return fn(*args)
    except (RetriableError, PermanentError) as exc:
        return exc


def _ignore_parsing(send: Callable[[], Any]) -> Any:
    """A 2xx whose body the SDK's model cannot parse is still a success (the write happened)."""
    try:
        return send()
    except ParsingError as exc:
        if exc.status_code and 200 <= exc.status_code < 300:
            return None
        raise ApiError(status_code=exc.status_code, headers=exc.headers, body=exc.body) from None


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        return
    body = _json_or_none(response)
    raise ApiError(status_code=response.status_code, headers=dict(response.headers), body=body if body is not None else response.text)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    return without_lone_surrogates(body) if _SURROGATE_ESCAPE.search(response.text) else body


# JSON may escape half of a UTF-16 pair (`"\ud83d"`, a JavaScript app cutting a name inside an
# emoji); Python then holds a lone surrogate, which no codec, SQLite or Salesforce takes.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def without_lone_surrogates(value: Any) -> Any:
    """`value` with every lone surrogate in its strings (keys included) replaced by U+FFFD."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {without_lone_surrogates(k): without_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_lone_surrogates(v) for v in value]
    return value


def _profile(response: Any) -> dict[str, Any]:
    """The profile exactly as Auth0 sent it (the SDK's model would coerce or refuse odd shapes)."""
    raw = getattr(response, "_response", None)
    body = _json_or_none(raw) if raw is not None else None
    if isinstance(body, dict):
        return body
    data = getattr(response, "data", None)
    return without_lone_surrogates(data.dict()) if hasattr(data, "dict") else {}


def _is_log_id(value: Any) -> bool:
    """Auth0 log ids are long strings of ASCII digits. Anything else (a damaged event) must never
    become the checkpoint: Auth0 would refuse it as `from` and the stream would stop for good."""
    return isinstance(value, str) and 0 < len(value) <= 200 and value.isascii() and value.isdigit()


def _from_link(link: str | None) -> str | None:
    if not link:
        return None
    for part in link.split(","):
        if 'rel="next"' in part and "<" in part:
            url = part[part.index("<") + 1 : part.index(">")]
            value = parse_qs(urlsplit(url).query).get("from")
            return value[0] if value and _is_log_id(value[0]) else None
    return None


def _date_of(event: dict[str, Any]) -> datetime | None:
    date = event.get("date")
    try:
        parsed = datetime.fromisoformat(date.replace("Z", "+00:00")) if isinstance(date, str) else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


def _stamp(when: datetime) -> str:
    """A time as Auth0's search writes dates: UTC, milliseconds, Z."""
    when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _sliced(
    page: Callable[[Any, int], list[dict[str, Any]]], lower: Any, *, order_key: str, id_key: str, what: str
) -> Iterator[list[dict[str, Any]]]:
    """Walk a search past its 1,000-result limit: read pages 0-9 of a query sorted by `order_key`;
    when all 1,000 came back, query again from the last `order_key` value seen (inclusive), dropping
    the items at that value that were already given. `page(lower, number)` runs one query."""
    already: set[str] = set()
    while True:
        last_value: Any = None
        at_last: set[str] = set()
        for number in range(SEARCH_CAP // PAGE_SIZE):
            items = page(lower, number)
            fresh = [item for item in items if item.get(id_key) not in already]
            if fresh:
                yield fresh
            for item in items:
                value = item.get(order_key)
                if value != last_value:
                    last_value, at_last = value, set()
                at_last.add(str(item.get(id_key)))
            if len(items) < PAGE_SIZE:
                return
        if not isinstance(last_value, str) or last_value == lower:
            raise FatalError(f"Auth0 search: more than {SEARCH_CAP} {what} share {order_key} {last_value!r}; they cannot be read by search")
        lower, already = last_value, at_last


def _lucene_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _ids_query(user_ids: list[str]) -> str:
    return "user_id:(" + " OR ".join(f'"{_lucene_escape(u)}"' for u in user_ids) + ")"


def _search_chunks(user_ids: list[str]) -> Iterator[list[str]]:
    """Up to PAGE_SIZE ids a search, fewer when long ids would make the query too long."""
    empty = len(quote("user_id:()", safe=""))
    chunk: list[str] = []
    size = empty
    for user_id in user_ids:
        cost = len(quote(f'"{_lucene_escape(user_id)}" OR ', safe=""))
        if chunk and (len(chunk) >= PAGE_SIZE or size + cost > MAX_SEARCH_QUERY):
            yield chunk
            chunk, size = [], empty
        chunk.append(user_id)
        size += cost
    if chunk:
        yield chunk
