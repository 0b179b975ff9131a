"""Prometheus metrics: the numbers of `status --json`, in Prometheus' text format.

Every scrape reads the state database (read-only, through `status.snapshot`), so the metrics survive
restarts, cover cycles run by `--run-once` too, and cannot disagree with `status --json`. The
endpoint is the official `prometheus-client`'s HTTP server on `[metrics] listen`, off by default;
`lead-poller status --prometheus` prints the same text for node_exporter's textfile collector.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from poller import status
from poller.errors import ConfigError, Problem
from poller.logs import get_logger

log = get_logger("poller.metrics")
PREFIX = "lead_poller_"


def _epoch(stamp: str | None) -> float | None:
    return None if stamp is None else datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class StateCollector(Collector):
    """Turns a status snapshot into metric families at scrape time."""

    def __init__(self, state_path: Path, *, clock: Callable[[], float] = time.time, stall_after_seconds: float | None = None) -> None:
        self.state_path = state_path
        self.clock = clock
        self.stall_after_seconds = stall_after_seconds

    def collect(self) -> Iterator[Metric]:
        try:
            document = status.snapshot(self.state_path, clock=self.clock, stall_after_seconds=self.stall_after_seconds)
        except Exception as exc:  # a scrape must answer; the gauge below says the state is unreadable
            log.warning("metrics_state_unreadable", error=str(exc))
            document = None
        yield GaugeMetricFamily(PREFIX + "state_readable", "1 if the state database could be read (0: no state yet, or an error)", value=0 if document is None else 1)
        if document is not None:
            yield from metric_families(document)


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, help_text, value=value)


def _labelled(kind: type, name: str, help_text: str, label: str, values: dict[str, Any]) -> Metric:
    family = kind(PREFIX + name, help_text, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _gauge(name: str, help_text: str, value: float | None) -> Iterator[Metric]:
    if value is not None:  # an unknown value is left out, not reported as 0
        yield GaugeMetricFamily(PREFIX + name, help_text, value=value)


def metric_families(document: dict[str, Any]) -> Iterator[Metric]:
    """The metrics of one status document. Names and their JSON keys are listed in the README."""
    totals = document["totals"]
    yield _labelled(CounterMetricFamily, "cycles", "Cycles finished, by outcome (ok, partial, interrupted, fatal)", "outcome", totals["cycles"])
    yield SummaryMetricFamily(PREFIX + "cycle_duration_seconds", "Time cycles took", count_value=sum(totals["cycles"].values()), sum_value=totals["cycle_seconds"])
    last = document["last_cycle"]
    if last is not None:
        yield from _gauge("last_cycle_duration_seconds", "How long the last finished cycle took", last["duration_seconds"])
        yield from _gauge("last_cycle_timestamp_seconds", "When the last cycle finished (UNIX time)", _epoch(last["finished_at"]))
    yield from _gauge("last_successful_cycle_timestamp_seconds", "When the last cycle with outcome ok finished (UNIX time)", _epoch(document["last_successful_cycle"]["finished_at"]))
    yield from _gauge("log_lag_seconds", "Now minus the date of the newest log event read", document["log"]["lag_seconds"])
    yield from _gauge("checkpoint_timestamp_seconds", "When the checkpoint last moved (UNIX time)", _epoch(document["checkpoint"]["taken_at"]))
    for name, help_text in (
        ("events_read", "Log events read"),
        ("login_events", "Login events among them"),
        ("new_users", "Users that became pending (new, or re-checked on a login)"),
        ("leads_created", "Leads created in Salesforce"),
        ("leads_reused", "Existing open leads reused (same email, or a duplicate rule's match)"),
        ("already_flagged", "Users already flagged in Auth0 (no Salesforce call)"),
        ("written_back", "Users flagged in Auth0 (recordedAsLead written back)"),
    ):
        yield _counter(name, help_text, totals[name])
    yield _labelled(CounterMetricFamily, "users_skipped", "Users skipped, by reason", "reason", totals["skipped"])
    yield _labelled(CounterMetricFamily, "user_failures", "Users that failed for good, by code", "code", totals["failed"])
    yield _labelled(CounterMetricFamily, "retries", "User steps scheduled for a retry, by code", "code", totals["retrying"])
    yield _labelled(CounterMetricFamily, "rate_limited", "Rate-limit answers (Auth0 429; Salesforce 429 or REQUEST_LIMIT_EXCEEDED), by API", "api", {"auth0": 0, "salesforce": 0, **totals["rate_limited"]})
    usage = document["salesforce_api"]
    if usage is not None:
        yield GaugeMetricFamily(PREFIX + "salesforce_api_usage", "Salesforce API calls used in the last 24 h (Sforce-Limit-Info)", value=usage["used"])
        yield GaugeMetricFamily(PREFIX + "salesforce_api_limit", "Salesforce daily API allowance (Sforce-Limit-Info)", value=usage["limit"])
    yield _labelled(GaugeMetricFamily, "users", "Users in the ledger, by status", "status", document["users"])
    retries = document["retries"]
    yield GaugeMetricFamily(PREFIX + "users_due", "Pending users due now", value=retries["due_now"])
    yield GaugeMetricFamily(PREFIX + "users_waiting_retry", "Pending users waiting for a retry", value=retries["waiting"])


def registry_for(state_path: Path, *, clock: Callable[[], float] = time.time, stall_after_seconds: float | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(state_path, clock=clock, stall_after_seconds=stall_after_seconds))
    return registry


def text(state_path: Path, *, clock: Callable[[], float] = time.time, stall_after_seconds: float | None = None) -> str:
    """The exposition text, for `status --prometheus`."""
    return generate_latest(registry_for(state_path, clock=clock, stall_after_seconds=stall_after_seconds)).decode("utf-8")


class MetricsServer:
    """The HTTP endpoint (`GET /metrics`, or any path), on a thread of its own."""

    def __init__(self, listen: tuple[str, int], state_path: Path, *, stall_after_seconds: float | None = None) -> None:
        host, port = listen
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry_for(state_path, stall_after_seconds=stall_after_seconds))
        except OSError as exc:
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise ConfigError([Problem("metrics.listen", repr(shown), f"cannot listen there: {exc.strerror or exc}")]) from None
        self.host = host
        self.port = int(self._server.server_address[1])
        log.info("metrics_listening", port=self.port)  # (the host is in the config; IPs are masked in logs)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
