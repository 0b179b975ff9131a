"""Rate-limit pacing and waits: pure logic with an injected clock (no HTTP), plus the 429 path
through the sandbox."""

from __future__ import annotations

import math
import threading

import pytest

from poller.pacing import Interrupt, RateGate, retry_after_seconds


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "headers, attempt, expected",
    [
        ({"Retry-After": "7"}, 1, 7.0),
        ({"retry-after": "0"}, 1, 1.0),  # never a zero wait: a tight loop of 429s otherwise
        ({"x-ratelimit-reset": "1012"}, 1, 12.0),  # an absolute UNIX time, not a delta
        ({"x-ratelimit-reset": "10"}, 1, 1.0),  # a reset in the past (clock skew)
        ({"x-ratelimit-reset": "10"}, 3, 4.0),  # ... and the floor doubles with each 429 in a row
        ({"x-ratelimit-reset": "nan"}, 2, 2.0),
        ({"Retry-After": "inf"}, 1, 1.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 1, 1.0),
        ({}, 7, 60.0),
        ({"Retry-After": "999999"}, 1, 3600.0),  # bounded
    ],
)
def test_retry_after_reads_the_headers_with_a_floor(headers, attempt, expected):
    assert retry_after_seconds(headers, 1000.0, attempt=attempt) == expected


def test_gate_waits_for_the_reset_when_the_bucket_is_at_the_reserve():
    clock = Clock()
    gate = RateGate(reserve=1, clock=clock)
    gate.observe("users_read", {"x-ratelimit-limit": "10", "x-ratelimit-remaining": "1", "x-ratelimit-reset": "1005"})
    waits = []

    class RecordingInterrupt(Interrupt):
        def sleep(self, seconds: float) -> bool:
            waits.append(round(seconds, 2))
            clock.now += seconds
            return True

    assert gate.take("users_read", RecordingInterrupt(clock=clock))
    assert waits == [5.05]
    assert gate.take("logs", RecordingInterrupt(clock=clock))  # other groups are not held
    assert waits == [5.05]


def test_gate_gives_way_when_the_wait_would_pass_the_deadline():
    clock = Clock()
    gate = RateGate(clock=clock)
    gate.observe("users_read", {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "4600"})
    assert not gate.take("users_read", Interrupt(deadline=1010.0, clock=clock))


@pytest.mark.parametrize("reset", ["nan", "inf", "-inf", "soon"])
def test_malformed_reset_headers_never_spin(reset):
    clock = Clock()
    gate = RateGate(clock=clock)
    gate.observe("users_read", {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset})
    done = threading.Event()

    def take():
        gate.take("users_read", Interrupt(clock=clock))
        done.set()

    worker = threading.Thread(target=take, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert done.is_set()


def test_interrupt_sleep_refuses_odd_durations_without_waiting():
    interrupt = Interrupt(clock=Clock())
    assert interrupt.sleep(math.nan) and interrupt.sleep(-5)
    interrupt.stop.set()
    assert not interrupt.sleep(0)


def test_repeated_429_with_a_reset_in_the_past_backs_off_instead_of_spinning(sandbox, tenant, make_app):
    import time

    from structlog.testing import capture_logs

    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    past = str(int(time.time()) - 1000)
    body = {"statusCode": 429, "error": "Too Many Requests", "message": "Global limit has been reached", "errorCode": "too_many_requests"}
    sandbox.auth0.fail("GET", r"/api/v2/users/.+", status=429, body=body, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": past}, times=2)
    app = make_app()
    with capture_logs() as captured:
        report = app.run_cycle()
    assert report.exit_code == 0 and app.ledger.get("auth0|a").status == "recorded"
    assert len(sandbox.auth0.calls("GET", r"/api/v2/users/.+")) == 3
    assert [e["wait_seconds"] for e in captured if e["event"] == "auth0_rate_limited"] == [1.0, 2.0]


def test_rate_limit_wait_past_the_deadline_ends_the_cycle_with_exit_75(sandbox, tenant, cli):
    from poller.sandbox.auth0 import RateLimits

    user_ids = [f"auth0|rl{n:03d}" for n in range(30)]
    for user_id in user_ids:
        tenant.user(user_id)
    tenant.logins(*user_ids)
    # Three profile reads, then the bucket refills one token an hour: the wait passes any deadline.
    sandbox.auth0.rate_limits = RateLimits(users_read=(3, 1 / 3600), logs=(100, 100.0), users_write=(100, 100.0), other=(100, 100.0))
    config = sandbox.write_config(schedule={"interval_seconds": 5}, work={"concurrency": 1})

    run = cli("--run-once", config=config)

    assert run.code == 75
    summary = run.event("cycle_finished")
    assert summary["deadline_reached"] is True and summary["failed"] == {}
    assert run.event("cycle_deadline_reached")["level"] == "warning"
