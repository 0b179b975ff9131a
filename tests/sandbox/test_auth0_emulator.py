"""The Auth0 emulator speaks Auth0's wire format; the scenario data is deterministic and realistic.

Driven over real HTTPS with httpx and, for users, with the real auth0-python SDK.
"""

from __future__ import annotations

import json
import math
import ssl
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from auth0.management import Auth0, ForbiddenError, NotFoundError, TooManyRequestsError, UnauthorizedError

from poller.sandbox import lucene
from poller.sandbox.auth0 import Auth0Emulator, RateLimits, TokenBucket, log_sort_key
from poller.sandbox.scenario import (
    LOGIN_TYPES,
    bench_scenario,
    day_later_scenario,
    demo_scenario,
    log_event,
    make_log_id,
    user_profile,
)
from poller.sandbox.tls import SandboxCA

CLIENT_ID = "lead-poller-test"
CLIENT_SECRET = "s3cr3t-for-the-sandbox"
T0 = datetime(2025, 3, 3, 9, 0, 0, tzinfo=timezone.utc)
SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples" / "auth0-logs.jsonl"


class FakeClock:
    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> SandboxCA:
    return SandboxCA()


@pytest.fixture(scope="module")
def bundle(ca: SandboxCA, tmp_path_factory) -> str:
    return str(ca.write_bundle(tmp_path_factory.mktemp("ca") / "ca.pem"))


def tls(bundle: str) -> ssl.SSLContext:
    """What httpx's `verify=` wants (a bare path is deprecated in httpx 0.28+)."""
    return ssl.create_default_context(cafile=bundle)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def start_emulator(ca: SandboxCA):
    started: list[Auth0Emulator] = []

    def start(**kwargs) -> Auth0Emulator:
        kwargs.setdefault("client_id", CLIENT_ID)
        kwargs.setdefault("client_secret", CLIENT_SECRET)
        emu = Auth0Emulator(**kwargs)
        emu.serve(ca.server_context())
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def emu(start_emulator, clock) -> Auth0Emulator:
    return start_emulator(clock=clock)


@pytest.fixture
def http(bundle):
    with httpx.Client(verify=tls(bundle), timeout=5) as client:
        yield client


def get_token(http: httpx.Client, emu: Auth0Emulator) -> str:
    resp = http.post(
        f"{emu.base_url}/oauth/token",
        data={"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
              "audience": f"https://{emu.host}/api/v2/"},
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]


def api(http: httpx.Client, emu: Auth0Emulator, token: str, method: str, path: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return http.request(method, f"{emu.base_url}/api/v2{path}", headers=headers, **kwargs)


def sdk(emu: Auth0Emulator, token: str, bundle: str) -> Auth0:
    return Auth0(base_url=f"https://{emu.host}/api/v2", token=token,
                 httpx_client=httpx.Client(verify=tls(bundle), timeout=5), max_retries=0)


def make_logs(n: int, types=("s", "seacft", "ssa", "fu"), start: datetime = T0) -> list[dict]:
    return [
        log_event(types[i % len(types)], user_id=f"auth0|u{i % 3}", when=start + timedelta(seconds=10 * i), seq=i + 1)
        for i in range(n)
    ]


def parse_link(link: str) -> str:
    assert link.endswith('>; rel="next"'), link
    return link[1:link.index(">")]


# --- token endpoint -----------------------------------------------------------------------------


def test_token_form_and_json(emu, http):
    aud = f"https://{emu.host}/api/v2/"
    form = http.post(f"{emu.base_url}/oauth/token", data={
        "grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "audience": aud})
    assert form.status_code == 200
    body = form.json()
    assert set(body) == {"access_token", "expires_in", "scope", "token_type"}
    assert body["expires_in"] == 86400 and body["token_type"] == "Bearer"
    assert body["scope"] == "read:logs read:users update:users_app_metadata"
    js = http.post(f"{emu.base_url}/oauth/token", json={
        "grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "audience": aud})
    assert js.status_code == 200 and js.json()["access_token"] != body["access_token"]
    assert emu.tokens_issued == 2


def test_token_bad_secret_and_bad_audience(emu, http):
    aud = f"https://{emu.host}/api/v2/"
    bad = http.post(f"{emu.base_url}/oauth/token", data={
        "grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": "nope", "audience": aud})
    assert bad.status_code == 401
    assert bad.json() == {"error": "access_denied", "error_description": "Unauthorized"}
    wrong_aud = "https://elsewhere.example.com/api/v2/"
    bad_aud = http.post(f"{emu.base_url}/oauth/token", json={
        "grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "audience": wrong_aud})
    assert bad_aud.status_code == 403
    assert bad_aud.json() == {"error": "access_denied",
                              "error_description": f"Service not enabled within domain: {wrong_aud}"}
    assert emu.tokens_issued == 0


def test_missing_or_unknown_token_is_401(emu, http):
    no_auth = http.get(f"{emu.base_url}/api/v2/logs?from=1")
    assert no_auth.status_code == 401 and no_auth.json()["statusCode"] == 401
    unknown = api(http, emu, "not-a-token", "GET", "/logs", params={"from": "1"})
    assert unknown.status_code == 401
    assert unknown.json() == {"statusCode": 401, "error": "Unauthorized", "message": "Invalid token",
                              "errorCode": "invalid_token"}


def test_expired_token_is_401(emu, http, clock, bundle):
    emu.add_users([user_profile("auth0|e", email="e@example.com")])
    token = get_token(http, emu)
    assert api(http, emu, token, "GET", "/logs", params={"from": "1"}).status_code == 200
    emu.expire_tokens()
    resp = api(http, emu, token, "GET", "/logs", params={"from": "1"})
    assert resp.status_code == 401
    assert resp.json()["message"] == "Expired token received for JSON Web Token validation"
    with pytest.raises(UnauthorizedError) as err:
        sdk(emu, token, bundle).users.get("auth0|e")
    assert err.value.status_code == 401 and err.value.body["errorCode"] == "invalid_token"
    fresh = get_token(http, emu)
    assert api(http, emu, fresh, "GET", "/logs", params={"from": "1"}).status_code == 200
    clock.advance(86400)  # token_lifetime passes on the emulator's clock
    assert api(http, emu, fresh, "GET", "/logs", params={"from": "1"}).status_code == 401


def test_scope_403(emu, http, bundle):
    emu.add_users([user_profile("auth0|abc", email="a@example.com")])
    emu.scopes = ["read:logs"]
    token = get_token(http, emu)
    resp = api(http, emu, token, "GET", "/users/auth0|abc")
    assert resp.status_code == 403
    assert resp.json()["errorCode"] == "insufficient_scope"
    assert resp.json()["message"].startswith("Insufficient scope, expected any of: read:users")
    emu.scopes = ["read:users"]
    token = get_token(http, emu)
    logs = api(http, emu, token, "GET", "/logs", params={"from": "1"})
    assert logs.status_code == 403
    assert logs.json() == {"statusCode": 403, "error": "Forbidden",
                           "message": "Insufficient scope, expected any of: read:logs,read:logs_users",
                           "errorCode": "insufficient_scope"}
    # update:users_app_metadata may change app_metadata only
    emu.scopes = "read:users update:users_app_metadata"  # a space-separated string works too
    client = sdk(emu, get_token(http, emu), bundle)
    with pytest.raises(ForbiddenError) as err:
        client.users.update("auth0|abc", given_name="Mallory")
    assert err.value.status_code == 403
    assert client.users.update("auth0|abc", app_metadata={"x": 1}).app_metadata == {"x": 1}


# --- logs by checkpoint -------------------------------------------------------------------------


def test_checkpoint_paging_to_empty_page_with_link(emu, http):
    logs = make_logs(7)
    emu.add_logs(reversed(logs))  # any order in, sorted by log_id inside
    assert [e["log_id"] for e in emu.logs] == sorted(e["log_id"] for e in logs)
    token = get_token(http, emu)
    first = logs[0]["log_id"]
    url = f"{emu.base_url}/api/v2/logs?from={first}&take=3"
    seen = []
    pages = []
    while True:
        resp = http.get(url, headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200
        page = resp.json()
        assert isinstance(page, list)
        pages.append(len(page))
        next_url = parse_link(resp.headers["Link"])
        if not page:
            assert next_url == url  # no newer logs: the next URL is the one just used
            break
        assert next_url == f"https://{emu.host}/api/v2/logs?from={page[-1]['log_id']}&take=3"
        seen.extend(e["log_id"] for e in page)
        url = next_url
    assert pages == [3, 3, 0]
    assert seen == [e["log_id"] for e in logs[1:]]
    # new logs show up at the same URL
    emu.add_logs(make_logs(1, start=T0 + timedelta(hours=1)))
    again = http.get(url, headers={"Authorization": f"Bearer {token}"}).json()
    assert len(again) == 1


def test_checkpoint_ignores_q_and_everything_else(emu, http):
    logs = make_logs(8)
    emu.add_logs(logs)
    token = get_token(http, emu)
    resp = api(http, emu, token, "GET", "/logs", params={
        "from": "0", "take": "100", "q": "type:s", "sort": "date:-1", "fields": "type", "include_fields": "true",
        "include_totals": "true", "page": "3", "per_page": "1"})
    body = resp.json()
    assert isinstance(body, list) and len(body) == 8
    assert {e["type"] for e in body} == {"s", "seacft", "ssa", "fu"}
    assert [e["log_id"] for e in body] == [e["log_id"] for e in logs]
    assert set(body[0]) == set(logs[0])  # all fields
    assert parse_link(resp.headers["Link"]).endswith(f"from={logs[-1]['log_id']}&take=100")


def test_checkpoint_take_defaults_50_and_clamps_to_100(emu, http):
    emu.add_logs(make_logs(130))
    token = get_token(http, emu)
    default = api(http, emu, token, "GET", "/logs", params={"from": "1"})
    assert len(default.json()) == 50 and default.headers["Link"].endswith('&take=50>; rel="next"')
    big = api(http, emu, token, "GET", "/logs", params={"from": "1", "take": "500"})
    assert len(big.json()) == 100 and big.headers["Link"].endswith('&take=100>; rel="next"')


def test_checkpoint_compares_ids_numerically(emu, http):
    emu.add_logs(make_logs(3))
    token = get_token(http, emu)
    # a short id sorts before every 56-digit id; a longer one after all of them
    assert len(api(http, emu, token, "GET", "/logs", params={"from": "99999"}).json()) == 3
    assert api(http, emu, token, "GET", "/logs", params={"from": "1" + "0" * 56}).json() == []


def test_malformed_from_is_400(emu, http):
    token = get_token(http, emu)
    resp = api(http, emu, token, "GET", "/logs", params={"from": "90020abc", "take": "10"})
    assert resp.status_code == 400
    body = resp.json()
    assert body["statusCode"] == 400 and body["error"] == "Bad Request" and body["errorCode"] == "invalid_uri"
    assert "on property from" in body["message"]


def test_get_one_log(emu, http):
    logs = make_logs(3)
    emu.add_logs(logs)
    token = get_token(http, emu)
    assert api(http, emu, token, "GET", f"/logs/{logs[1]['log_id']}").json() == logs[1]
    assert api(http, emu, token, "GET", "/logs/900123").status_code == 404


# --- log search ---------------------------------------------------------------------------------


def test_search_newest_log_and_date_query(emu, http):
    logs = make_logs(20)
    emu.add_logs(logs)
    token = get_token(http, emu)
    newest = api(http, emu, token, "GET", "/logs", params={"sort": "date:-1", "per_page": "1"}).json()
    by_date = sorted(logs, key=lambda e: e["date"])
    assert newest == [by_date[-1]]
    start = by_date[12]["date"]
    first_after = api(http, emu, token, "GET", "/logs", params={
        "q": f"date:[{start} TO *]", "sort": "date:1", "per_page": "1"}).json()
    assert first_after == [by_date[12]]
    totals = api(http, emu, token, "GET", "/logs", params={
        "q": "type:s", "include_totals": "true", "per_page": "2", "page": "1"}).json()
    assert set(totals) == {"start", "limit", "length", "total", "logs"}
    assert (totals["start"], totals["limit"], totals["length"], totals["total"]) == (2, 2, 2, 5)
    assert all(e["type"] == "s" for e in totals["logs"])
    upto = api(http, emu, token, "GET", "/logs", params={
        "q": f'date:[* TO {by_date[3]["date"]}}} AND user_id:"auth0|u0"', "per_page": "100"}).json()
    assert upto and all(e["date"] < by_date[3]["date"] and e["user_id"] == "auth0|u0" for e in upto)


def test_search_1000_record_cap(emu, http):
    token = get_token(http, emu)
    assert api(http, emu, token, "GET", "/logs", params={"page": "9", "per_page": "100"}).status_code == 200
    resp = api(http, emu, token, "GET", "/logs", params={"page": "10", "per_page": "100"})
    assert resp.status_code == 400
    assert resp.json()["message"].startswith(
        "Requesting page 11 exceeds the allowed maximum of 1000 records: please consider searching by checkpoint")
    users = api(http, emu, token, "GET", "/users", params={"q": "email:*", "page": "20", "per_page": "50"})
    assert users.status_code == 400 and users.json()["statusCode"] == 400
    assert api(http, emu, token, "GET", "/logs", params={"per_page": "101"}).status_code == 400


# --- users --------------------------------------------------------------------------------------


def test_users_404_body(emu, http, bundle):
    token = get_token(http, emu)
    resp = api(http, emu, token, "GET", "/users/auth0%7Cmissing")
    assert resp.status_code == 404
    assert resp.json() == {"statusCode": 404, "error": "Not Found", "message": "The user does not exist.",
                           "errorCode": "inexistent_user"}
    with pytest.raises(NotFoundError) as err:
        sdk(emu, token, bundle).users.get("auth0|missing")
    assert err.value.status_code == 404 and err.value.body["errorCode"] == "inexistent_user"
    with pytest.raises(NotFoundError):
        sdk(emu, token, bundle).users.update("auth0|missing", app_metadata={"recordedAsLead": True})


def test_users_get_with_sdk_and_fields(emu, http, bundle):
    profile = user_profile("google-oauth2|1234567890", email="Ada.L@example.com", given_name="Ada",
                           family_name="Lovelace", app_metadata={"plan": "pro"})
    emu.add_users([profile])
    token = get_token(http, emu)
    user = sdk(emu, token, bundle).users.get("google-oauth2|1234567890")
    assert user.email == "Ada.L@example.com" and user.given_name == "Ada" and user.app_metadata == {"plan": "pro"}
    assert emu.calls("GET", r"/api/v2/users/.*")[0].path == "/api/v2/users/google-oauth2|1234567890"
    only = api(http, emu, token, "GET", "/users/google-oauth2|1234567890",
               params={"fields": "email,app_metadata", "include_fields": "true"}).json()
    assert only == {"email": "Ada.L@example.com", "app_metadata": {"plan": "pro"}}
    without = api(http, emu, token, "GET", "/users/google-oauth2|1234567890",
                  params={"fields": "identities", "include_fields": "false"}).json()
    assert "identities" not in without and without["email"] == "Ada.L@example.com"


def test_patch_merge_null_delete_and_empty_object_wipe(emu, http, bundle, clock):
    uid = "auth0|merge"
    emu.add_users([user_profile(uid, email="m@example.com", app_metadata={
        "plan": "pro", "roles": ["admin"], "nested": {"a": 1, "b": 2}, "old": "x"})])
    before = emu.users[uid]["updated_at"]
    client = sdk(emu, get_token(http, emu), bundle)

    clock.advance(5)
    updated = client.users.update(uid, app_metadata={"recordedAsLead": True})
    assert updated.app_metadata == {"plan": "pro", "roles": ["admin"], "nested": {"a": 1, "b": 2}, "old": "x",
                                    "recordedAsLead": True}
    assert emu.users[uid]["updated_at"] != before

    # first-level merge only: a nested object replaces; null deletes a key
    updated = client.users.update(uid, app_metadata={"nested": {"c": 3}, "old": None})
    assert updated.app_metadata == {"plan": "pro", "roles": ["admin"], "nested": {"c": 3}, "recordedAsLead": True}
    assert emu.calls("PATCH")[-1].json() == {"app_metadata": {"nested": {"c": 3}, "old": None}}

    # an empty object wipes the metadata completely (Auth0's real behaviour)
    client.users.update(uid, app_metadata={})
    assert "app_metadata" not in emu.users[uid] or emu.users[uid]["app_metadata"] == {}
    assert not (client.users.get(uid).app_metadata or {})
    assert emu.users[uid]["email"] == "m@example.com"


def test_patch_user_metadata_and_top_level_with_update_users(emu, http):
    uid = "auth0|top"
    emu.add_users([user_profile(uid, email="t@example.com", given_name="T", user_metadata={"lang": "fr"})])
    emu.scopes = ["update:users"]
    token = get_token(http, emu)
    resp = api(http, emu, token, "PATCH", f"/users/{uid}",
               json={"given_name": "Tess", "user_metadata": {"color": "blue", "lang": None}})
    assert resp.status_code == 200
    assert resp.json()["given_name"] == "Tess" and resp.json()["user_metadata"] == {"color": "blue"}
    for bad in ([1, 2], "x", {}, {"app_metadata": "x"}):
        r = api(http, emu, token, "PATCH", f"/users/{uid}", json=bad)
        assert r.status_code == 400 and r.json()["statusCode"] == 400, bad


# --- user search --------------------------------------------------------------------------------


@pytest.fixture
def populated(emu):
    users = [
        user_profile("auth0|a1", email="A1@example.com", app_metadata={"recordedAsLead": True},
                     created_at="2024-03-01T00:00:00.000Z"),
        user_profile("auth0|a2", email="a2@example.com", created_at="2024-02-01T00:00:00.000Z"),
        user_profile("google-oauth2|123", email="g@example.org", created_at="2024-01-01T00:00:00.000Z"),
        user_profile("sms|555", email=None, phone_number="+12025550100", created_at="2023-06-01T00:00:00.000Z"),
    ]
    emu.add_users(users)
    return emu


def search(http, emu, token, **params):
    resp = api(http, emu, token, "GET", "/users", params={"search_engine": "v3", **params})
    assert resp.status_code == 200, resp.text
    return resp.json()


def ids(users):
    return sorted(u["user_id"] for u in users)


def test_user_search(populated, http):
    emu = populated
    token = get_token(http, emu)
    assert ids(search(http, emu, token, q='user_id:"auth0|a1"')) == ["auth0|a1"]
    assert ids(search(http, emu, token, q='user_id:("auth0|a1" OR "sms|555" OR "auth0|nope")')) == [
        "auth0|a1", "sms|555"]
    assert ids(search(http, emu, token, q='identities.user_id:"123"')) == ["google-oauth2|123"]
    assert ids(search(http, emu, token, q='email:"a1@example.com"')) == ["auth0|a1"]  # case-insensitive field
    assert ids(search(http, emu, token, q="app_metadata.recordedAsLead:true")) == ["auth0|a1"]
    assert ids(search(http, emu, token, q="NOT _exists_:email")) == ["sms|555"]
    assert ids(search(http, emu, token, q="_exists_:email AND NOT app_metadata.recordedAsLead:true")) == [
        "auth0|a2", "google-oauth2|123"]
    assert ids(search(http, emu, token, q="created_at:[2024-01-01 TO 2024-02-01T00:00:00.000Z}")) == [
        "google-oauth2|123"]
    sorted_users = search(http, emu, token, q="created_at:{2023-01-01 TO *]", sort="created_at:1",
                          fields="user_id,created_at")
    assert [u["user_id"] for u in sorted_users] == ["sms|555", "google-oauth2|123", "auth0|a2", "auth0|a1"]
    assert set(sorted_users[0]) == {"user_id", "created_at"}
    totals = search(http, emu, token, q="_exists_:user_id", include_totals="true", per_page="3", page="1")
    assert (totals["start"], totals["limit"], totals["length"], totals["total"]) == (3, 3, 1, 4)
    emu.search_index_lag = {"auth0|a2"}
    assert ids(search(http, emu, token, q='user_id:"auth0|a2"')) == []
    bad = api(http, emu, token, "GET", "/users", params={"q": 'user_id:("a" OR', "search_engine": "v3"})
    assert bad.status_code == 400


def test_user_search_by_ids_is_answered_from_the_index_with_the_same_rules(populated, http):
    emu = populated
    token = get_token(http, emu)
    emu.search_index_lag = {"auth0|a2"}
    assert ids(search(http, emu, token, q='user_id:("auth0|a2" OR "auth0|a1" OR "auth0|gone")')) == ["auth0|a1"]
    assert lucene.exact_values(lucene.parse('user_id:("a" OR "b")'), "user_id") == {"a", "b"}
    assert lucene.exact_values(lucene.parse('user_id:"a"'), "user_id") == {"a"}
    for other in ('user_id:a*', 'user_id:"a" OR email:"b"', 'email:"a"', 'user_id:("a" AND "b")'):
        assert lucene.exact_values(lucene.parse(other), "user_id") is None


def test_latency_holds_every_response_until_the_emulator_stops(start_emulator, bundle):
    emu = start_emulator()
    with httpx.Client(verify=tls(bundle), timeout=0.2) as quick:
        assert quick.post(f"{emu.base_url}/oauth/token", data={}).status_code == 400  # no latency by default
        emu.latency = 600.0
        with pytest.raises(httpx.ReadTimeout):
            quick.post(f"{emu.base_url}/oauth/token", data={})
    emu.stop()  # releases the held handler instead of waiting out the latency


def test_user_search_with_sdk(populated, http, bundle):
    emu = populated
    pager = sdk(emu, get_token(http, emu), bundle).users.list(q='user_id:("auth0|a1" OR "auth0|a2")',
                                                              search_engine="v3", per_page=50)
    assert sorted(u.user_id for u in pager.items) == ["auth0|a1", "auth0|a2"]


# --- rate limits --------------------------------------------------------------------------------


def test_token_bucket_arithmetic():
    clock = FakeClock(1000.0)
    bucket = TokenBucket(3, 0.5, clock=clock)
    assert bucket.take() == (True, 2, 1002)  # next token in 2 s
    assert bucket.take() == (True, 1, 1002)
    assert bucket.take() == (True, 0, 1002)
    assert bucket.take() == (False, 0, 1002)
    clock.advance(1.0)  # half a token
    assert bucket.take() == (False, 0, 1002)
    clock.advance(1.0)
    assert bucket.take() == (True, 0, 1004)
    clock.advance(100)
    assert bucket.peek() == (3, 1102)  # full: never above capacity; reset is "now"
    fast = TokenBucket(1, 1.0, clock=clock, time_scale=10)
    assert fast.take() == (True, 0, math.ceil(clock.now + 0.1))
    clock.advance(0.1)
    assert fast.take()[0] is True


def test_rate_limit_headers_and_429(start_emulator, http, bundle, clock):
    emu = start_emulator(clock=clock, rate_limits=RateLimits(logs=(2, 1.0), users_read=(1, 1.0)))
    emu.add_users([user_profile("auth0|r", email="r@example.com")])
    token = get_token(http, emu)
    first = api(http, emu, token, "GET", "/logs", params={"from": "1"})
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit"] == "2"
    assert first.headers["x-ratelimit-remaining"] == "1"
    assert first.headers["x-ratelimit-reset"] == str(math.ceil(clock.now + 1))
    assert api(http, emu, token, "GET", "/logs", params={"from": "1"}).headers["x-ratelimit-remaining"] == "0"
    limited = api(http, emu, token, "GET", "/logs", params={"from": "1"})
    assert limited.status_code == 429
    assert limited.json() == {"statusCode": 429, "error": "Too Many Requests",
                              "message": "Global limit has been reached", "errorCode": "too_many_requests"}
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert int(limited.headers["x-ratelimit-reset"]) >= int(clock.now)
    assert emu.count_429["logs"] == 1
    # groups have their own buckets
    assert api(http, emu, token, "GET", "/users/auth0|r").status_code == 200
    with pytest.raises(TooManyRequestsError) as err:
        sdk(emu, token, bundle).users.get("auth0|r")
    assert err.value.headers["x-ratelimit-limit"] == "1"
    assert emu.count_429 == {"logs": 1, "users_read": 1, "users_write": 0, "other": 0}
    # refill on the emulator's clock
    clock.advance(1.0)
    assert api(http, emu, token, "GET", "/logs", params={"from": "1"}).status_code == 200
    # 401s and scripted faults carry the headers too
    clock.advance(2.0)
    unauth = api(http, emu, "bogus", "GET", "/logs", params={"from": "1"})
    assert unauth.status_code == 401 and "x-ratelimit-limit" in unauth.headers
    emu.fail("GET", r"/api/v2/logs", status=503, body={"statusCode": 503})
    clock.advance(5)
    faulted = api(http, emu, token, "GET", "/logs", params={"from": "1"})
    assert faulted.status_code == 503 and faulted.headers["x-ratelimit-limit"] == "2"
    # no headers on the token endpoint, nor without rate limits
    assert "x-ratelimit-limit" not in http.post(f"{emu.base_url}/oauth/token", data={}).headers


def test_no_rate_limit_headers_by_default(emu, http):
    resp = api(http, emu, get_token(http, emu), "GET", "/logs", params={"from": "1"})
    assert "x-ratelimit-limit" not in resp.headers


# --- lucene -------------------------------------------------------------------------------------

DOC = {
    "user_id": "auth0|abc",
    "email": "X@example.com",
    "email_verified": True,
    "identities": [{"user_id": "abc", "provider": "auth0"}, {"user_id": "999", "provider": "github"}],
    "app_metadata": {"recordedAsLead": True, "roles": ["admin"], "plan": {"tier": "gold"}},
    "user_metadata": {},
    "created_at": "2024-01-05T10:00:00.000Z",
    "logins_count": 3,
    "type": "seacft",
}


@pytest.mark.parametrize("query,expected", [
    ('user_id:"auth0|abc"', True),
    (r"user_id:auth0\|abc", True),
    ('user_id:("x" OR "auth0|abc")', True),
    ('user_id:("x" OR "y")', False),
    ('identities.user_id:"999"', True),
    ('email:"x@EXAMPLE.com"', True),
    ("app_metadata.recordedAsLead:true", True),
    ("app_metadata.recordedAsLead:false", False),
    ("app_metadata.roles:admin", True),
    ('app_metadata.plan.tier:"gold"', True),
    ("_exists_:app_metadata.recordedAsLead", True),
    ("_exists_:user_metadata", False),  # empty objects are not indexed
    ("NOT _exists_:app_metadata.recordedAsLead OR app_metadata.recordedAsLead:false", False),
    ("NOT app_metadata.recordedAsLead:true", False),
    ("-email_verified:true", False),
    ("email_verified:true AND (logins_count:[1 TO 5] OR nope:x)", True),
    ("logins_count:{3 TO *]", False),
    ("created_at:[2024-01-01 TO *]", True),
    ("created_at:[2024-01-01T00:00:00 TO 2024-01-05T10:00:00}", False),
    ("created_at:[* TO 2024-01-05T10:00:00.000Z]", True),
    ("type:se*", True),
    ("type:s", False),
    ("type:s OR type:seacft", True),
    ("type:s type:seacft", True),  # implicit OR, as Lucene
    ("", True),
])
def test_lucene_subset(query, expected):
    assert lucene.matches(lucene.parse(query), DOC, case_insensitive_fields=lucene.DEFAULT_CASE_INSENSITIVE) is expected


@pytest.mark.parametrize("query", ['a:(', 'a:"x', "AND", "a:[1 TO", ")", "a:[1 2]"])
def test_lucene_rejects(query):
    with pytest.raises(lucene.QueryError):
        lucene.parse(query)


# --- scenario -----------------------------------------------------------------------------------


def test_make_log_id_format_and_order():
    a = make_log_id(datetime(2021, 11, 4, 0, 15, 15, tzinfo=timezone.utc), 7)
    assert a == "900" + "20211104001515" + "0" * 38 + "7" and len(a) == 56
    assert make_log_id(datetime(2021, 1, 16, 12, 12, 32), 1, region="800").startswith("80020210116121232")
    ids_ = [make_log_id(T0 + timedelta(seconds=s), q) for s, q in [(0, 5), (0, 6), (1, 1), (3600, 2)]]
    assert ids_ == sorted(ids_, key=log_sort_key) == sorted(ids_)


def test_log_event_shapes_and_overrides():
    s = log_event("s", user_id="auth0|x", when=T0, seq=1, user_name="x@example.com")
    assert s["type"] == "s" and s["user_id"] == "auth0|x" and s["user_name"] == "x@example.com"
    assert s["log_id"] == make_log_id(T0, 1) and s["date"].endswith("Z") and s["date"] < "2025-03-03T09:00:00.000Z"
    assert s["details"]["prompts"] and s["strategy"] == "auth0" and s["connection"]
    assert s == log_event("s", user_id="auth0|x", when=T0, seq=1, user_name="x@example.com")  # deterministic
    sso = log_event("s", user_id="auth0|x", when=T0, seq=2, shape="sso")
    assert sso["details"]["prompts"] == [] and sso["connection_id"] == "" and "strategy" not in sso
    assert log_event("fu", user_id=None, when=T0, seq=3)["user_id"] == ""
    seccft = log_event("seccft", user_id=None, when=T0, seq=4)
    assert seccft["user_id"] == "" and seccft["_id"] == seccft["log_id"]
    assert "user_id" not in log_event("f", user_id=None, when=T0, seq=5)
    assert "hostname" not in log_event("ss", user_id="auth0|x", when=T0, seq=6)
    over = log_event("s", user_id="auth0|x", when=T0, seq=7, ip="203.0.113.99", user_agent=None)
    assert over["ip"] == "203.0.113.99" and "user_agent" not in over
    for seq in range(40):
        ip = log_event("s", user_id=f"auth0|{seq}", when=T0, seq=seq)["ip"]
        assert ip.startswith("203.0.113.") or ip.startswith("2001:db8:")


def test_sample_shapes_are_covered():
    if not SAMPLES.exists():
        pytest.skip("shared samples not present")
    samples = [json.loads(line) for line in SAMPLES.read_text().splitlines() if line.strip()]
    for sample in samples:
        shape = "sso" if sample["type"] == "s" and not sample.get("details", {}).get("prompts") else None
        ours = log_event(sample["type"], user_id=sample.get("user_id") or None, when=T0, seq=1, shape=shape,
                         user_name=sample.get("user_name"))
        missing = set(sample) - set(ours)
        assert not missing, (sample["type"], missing)


def test_user_profile():
    u = user_profile("google-oauth2|42", email="ada@example.com", given_name="Ada", family_name="Lovelace",
                     app_metadata={"plan": "pro"}, logins_count=7)
    assert u["identities"] == [{"connection": "google-oauth2", "provider": "google-oauth2", "user_id": "42",
                                "isSocial": True}]
    assert u["name"] == "Ada Lovelace" and u["nickname"] == "ada" and u["logins_count"] == 7
    assert u["app_metadata"] == {"plan": "pro"} and u["last_ip"].startswith(("203.0.113.", "2001:db8:"))
    for key in ("created_at", "updated_at", "last_login", "picture", "email_verified", "user_metadata"):
        assert key in u
    phone = user_profile("sms|abc", email=None, phone_number="+12025550100")
    assert "email" not in phone and phone["name"] == "+12025550100"
    assert user_profile("auth0|x", email="x@example.com")["name"] == "x@example.com"


def test_demo_scenario_is_deterministic_and_realistic():
    sc = demo_scenario()
    assert json.dumps([sc.users, sc.logs]) == json.dumps([demo_scenario().users, demo_scenario().logs])
    assert json.dumps(sc.logs) != json.dumps(demo_scenario(seed=8).logs)
    assert len(sc.users) == 50 and len(sc.logs) == 300
    assert [e["log_id"] for e in sc.logs] == sorted((e["log_id"] for e in sc.logs), key=log_sort_key)
    assert len({e["log_id"] for e in sc.logs}) == 300
    exp = sc.expected
    by_id = {u["user_id"]: u for u in sc.users}
    assert len(exp["flagged_user_ids"]) == 5 and len(exp["no_email_user_ids"]) == 3
    assert len(exp["non_login_only_user_ids"]) >= 3 and len(exp["deleted_user_ids"]) == 1
    assert 30 <= len(exp["eligible_user_ids"]) <= 45
    login_users = {e["user_id"] for e in sc.logs if e["type"] in LOGIN_TYPES}
    for uid in exp["eligible_user_ids"]:
        assert uid in login_users and by_id[uid].get("email")
        assert not by_id[uid]["app_metadata"].get("recordedAsLead")
    assert not set(exp["eligible_user_ids"]) & (set(exp["flagged_user_ids"]) | set(exp["no_email_user_ids"]))
    assert not set(exp["non_login_only_user_ids"]) & login_users
    assert set(exp["flagged_user_ids"]) <= login_users and set(exp["no_email_user_ids"]) <= login_users
    for uid in exp["flagged_user_ids"]:
        assert len(by_id[uid]["app_metadata"]) > 1  # other keys from the earlier tool
    assert any(u["app_metadata"] == {"plan": "pro", "roles": ["admin"]} for u in sc.users)
    names = " ".join(u.get("name", "") for u in sc.users)
    assert "🚀" in names and "ليلى" in names and "נועה" in names and max(len(u["name"]) for u in sc.users) > 120
    types = {e["type"] for e in sc.logs}
    assert {"s", "ss", "scoa", "sepft", "seacft", "sertft", "ssa", "seccft", "f", "fu", "fp", "slo", "sapi"} <= types
    assert 0.35 <= sum(e["type"] in LOGIN_TYPES | {"ss"} for e in sc.logs) / len(sc.logs) <= 0.65
    assert any(e["type"] == "s" and e["details"].get("prompts") == [] for e in sc.logs)
    assert all(e["user_id"] == "" for e in sc.logs if e["type"] in ("fu", "seccft"))
    emails = [u["email"] for u in sc.users if "email" in u]
    assert all(e.endswith(("@example.com", "@example.org")) for e in emails) and len(set(emails)) == len(emails)
    assert all(e["ip"].startswith(("203.0.113.", "2001:db8:")) for e in sc.logs)
    # the scenario's own samples-free shapes: every ss comes before its user's other events
    for e in (e for e in sc.logs if e["type"] == "ss"):
        first = next(x for x in sc.logs if x.get("user_id") == e["user_id"])
        assert first is e


def test_demo_scenario_through_the_emulator(emu, http):
    sc = demo_scenario()
    emu.add_users(sc.users)
    emu.add_logs(sc.logs)
    token = get_token(http, emu)
    got, checkpoint = [], "0"
    while True:
        page = api(http, emu, token, "GET", "/logs", params={"from": checkpoint, "take": 100}).json()
        if not page:
            break
        got.extend(page)
        checkpoint = page[-1]["log_id"]
    assert got == sc.logs
    deleted = sc.expected["deleted_user_ids"][0]
    assert api(http, emu, token, "GET", f"/users/{deleted}").status_code == 404


def test_day_later_scenario_follows_its_base():
    base = bench_scenario(events=600, users=80, need_lead=20, seed=3)
    day = day_later_scenario(base, events=400, new_share=0.05, seed=4)
    events = list(day.events())
    assert len(events) == 400 and events == list(day)
    last_base = max((e["log_id"] for e in base.events()), key=log_sort_key)
    assert all(log_sort_key(e["log_id"]) > log_sort_key(last_base) for e in events)
    assert [e["log_id"] for e in events] == sorted((e["log_id"] for e in events), key=log_sort_key)
    newcomers = set(day.need_lead_ids)
    assert len(newcomers) == 10 == len(day.users)
    from_newcomers = [e for e in events if e.get("user_id") in newcomers]
    assert len(from_newcomers) == 20  # 5% of the events: each newcomer's s and seacft
    assert {e["user_id"] for e in from_newcomers if e["type"] == "s"} == newcomers
    seen = set(day.seen_user_ids)
    others = {e["user_id"] for e in events if e.get("user_id") and e["user_id"] not in newcomers}
    assert others <= seen


def test_bench_scenario_streams():
    b = bench_scenario(events=2001, users=300, need_lead=120, seed=3)
    events = list(b.events())
    assert len(events) == 2001 == len(b) and events == list(b)  # same every time
    assert [e["log_id"] for e in events] == sorted(e["log_id"] for e in events)
    by_id = {u["user_id"]: u for u in b.users}
    need = [uid for uid, u in by_id.items() if not u["app_metadata"].get("recordedAsLead")]
    assert sorted(need) == b.expected["eligible_user_ids"] and len(need) == 120
    logged_in = {e["user_id"] for e in events if e["type"] in LOGIN_TYPES}
    assert set(need) <= logged_in
    assert sum(e["type"] in LOGIN_TYPES for e in events) == 1001
    with pytest.raises(ValueError):
        bench_scenario(events=10, users=300, need_lead=120)
