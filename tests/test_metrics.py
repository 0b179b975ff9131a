"""The Prometheus endpoint, scraped over real HTTP: the same numbers as `status --json`."""

from __future__ import annotations

import json
import os

import httpx
from prometheus_client.parser import text_string_to_metric_families

from poller import config as config_module
from poller import status
from poller.app import App
from poller.metrics import MetricsServer, text
from tests.test_status import documented


class FrozenClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_endpoint_serves_the_numbers_of_status_json(sandbox, tenant):
    tenant.user("auth0|a")
    tenant.user("auth0|b")
    tenant.user("auth0|nomail", email=None)
    tenant.logins("auth0|a", "auth0|b", "auth0|nomail")
    config = config_module.load(sandbox.write_config(), environ={**os.environ, **sandbox.env()})
    with App(config) as app:
        app.run_cycle()
    clock = FrozenClock(app.clock() + 5)  # one instant for both views, so the ages agree exactly

    server = MetricsServer(("127.0.0.1", 0), config.state.path)  # reads the state at each scrape
    try:
        metrics = scrape(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.close()
    document = status.snapshot(config.state.path, clock=clock)

    def value(name: str, **labels: str) -> float:
        return metrics[(name, tuple(sorted(labels.items())))]

    totals = document["totals"]
    assert value("lead_poller_state_readable") == 1
    assert value("lead_poller_cycles_total", outcome="ok") == totals["cycles"]["ok"] == 1
    assert value("lead_poller_cycle_duration_seconds_count") == 1
    assert value("lead_poller_cycle_duration_seconds_sum") == totals["cycle_seconds"] == document["last_cycle"]["duration_seconds"]
    for name in ("events_read", "login_events", "new_users", "leads_created", "leads_reused", "already_flagged", "written_back"):
        assert value(f"lead_poller_{name}_total") == totals[name], name
    assert value("lead_poller_leads_created_total") == 2
    assert value("lead_poller_users_skipped_total", reason="no_email") == totals["skipped"]["no_email"] == 1
    assert value("lead_poller_rate_limited_total", api="auth0") == 0
    for state, count in document["users"].items():
        assert value("lead_poller_users", status=state) == count
    assert value("lead_poller_salesforce_api_usage") == document["salesforce_api"]["used"]
    assert value("lead_poller_salesforce_api_limit") == document["salesforce_api"]["limit"] == 15000
    assert status.iso(value("lead_poller_last_successful_cycle_timestamp_seconds")) == document["last_successful_cycle"]["finished_at"]
    assert status.iso(value("lead_poller_checkpoint_timestamp_seconds")) == document["checkpoint"]["taken_at"]

    # The lag depends on "now": with one clock for both, it is the same number.
    frozen = {(s.name): s.value for f in text_string_to_metric_families(text(config.state.path, clock=clock)) for s in f.samples}
    assert frozen["lead_poller_log_lag_seconds"] == document["log"]["lag_seconds"]


def test_every_documented_metric_is_served_and_every_served_one_is_documented(sandbox, tenant):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    sandbox.auth0.fail("PATCH", r"/api/v2/users/.*", status=400, body={"statusCode": 400, "error": "Bad Request", "message": "no"})
    config = config_module.load(sandbox.write_config(), environ={**os.environ, **sandbox.env()})
    with App(config) as app:
        app.run_cycle()  # a user failure, so the labelled failure series exists
    served = {f.name for f in text_string_to_metric_families(text(config.state.path))}
    names = {row.split("{")[0] for row in documented("metrics")}
    # The parser names counters without _total and summaries without _sum/_count.
    assert {n.removesuffix("_total") for n in names} == served


def test_no_state_yet_is_a_readable_zero_not_an_error(tmp_path):
    samples = {s.name: s.value for f in text_string_to_metric_families(text(tmp_path / "none.db")) for s in f.samples}
    assert samples == {"lead_poller_state_readable": 0.0}


def test_a_port_in_use_is_a_configuration_error_naming_the_key(tmp_path):
    from poller.errors import ConfigError

    first = MetricsServer(("127.0.0.1", 0), tmp_path / "state.db")
    try:
        try:
            MetricsServer(("127.0.0.1", first.port), tmp_path / "state.db")
        except ConfigError as exc:
            assert "metrics.listen" in str(exc) and "cannot listen" in str(exc)
        else:
            raise AssertionError("a second server on the same port must fail")
    finally:
        first.close()


def test_salesforce_usage_is_stamped_only_when_a_cycle_called_salesforce(sandbox, tenant):
    from poller.ledger import StateReader

    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    config = config_module.load(sandbox.write_config(), environ={**os.environ, **sandbox.env()})
    clock = FrozenClock(1_900_000_000.0)
    with App(config, clock=clock) as app:
        app.run_cycle()
        clock.now += 300
        app.run_cycle()  # nothing new: no Salesforce call
    with StateReader.open(config.state.path) as reader:
        usage = json.loads(reader.meta()["salesforce_api_usage"])
    assert usage["seen_at"] == 1_900_000_000.0 and usage["used"] >= 1
