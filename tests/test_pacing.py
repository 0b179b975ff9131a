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


def headers(remaining: int, reset: float, limit: int = 20) -> dict[str, str]:
    return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining), "X-RateLimit-Reset": str(int(reset))}


def setup() -> tuple[Clock, RateGate, Interrupt, Interrupt]:
    clock = Clock()
    gate = RateGate(clock=clock)
    patient = Interrupt(clock=clock)  # no deadline: only used where the gate must not wait
    now_or_never = Interrupt(clock=clock, deadline=clock())  # any wait would pass the deadline
    return clock, gate, patient, now_or_never


def test_the_first_call_probes_alone_then_the_answer_sets_the_pace():
    clock, gate, patient, now_or_never = setup()
    assert gate.acquire("users_read", patient)  # the probe
    assert not gate.acquire("users_read", now_or_never)  # the others wait for its answer
    assert gate.acquire("logs", patient)  # another group is not held up
    gate.release("logs")
    gate.observe("users_read", headers(remaining=5, reset=clock() + 1))
    gate.release("users_read")
    # 5 left, a tenth of the bucket (20 // 10 = 2) kept for the tenant's other clients: 3 calls go.
    for _ in range(3):
        assert gate.acquire("users_read", now_or_never)
    assert not gate.acquire("users_read", now_or_never)


def test_other_calls_in_flight_are_taken_off_an_answer():
    clock, gate, patient, now_or_never = setup()
    gate.acquire("users_write", patient)
    gate.observe("users_write", headers(remaining=12, reset=clock() + 1))
    gate.release("users_write")
    for _ in range(4):
        gate.acquire("users_write", patient)  # four calls out, none answered yet
    gate.observe("users_write", headers(remaining=10, reset=clock() + 1))  # Auth0 may not count the other 3
    assert gate.snapshot()["users_write"]["remaining"] == 7


def test_at_the_reserve_calls_wait_for_the_reset_then_one_probe_goes():
    clock, gate, patient, now_or_never = setup()
    gate.acquire("logs", patient)
    gate.observe("logs", headers(remaining=1, reset=clock() + 1, limit=10))
    gate.release("logs")
    assert not gate.acquire("logs", now_or_never)  # 1 left is the reserve: wait for the reset
    clock.now += 1
    assert gate.acquire("logs", now_or_never)  # the reset has come: a probe goes ...
    assert not gate.acquire("logs", now_or_never)  # ... alone
    gate.release("logs")  # it got no answer (a timeout): the next call probes again
    assert gate.acquire("logs", now_or_never)


@pytest.mark.parametrize("reset_in", [10 * 86400, 1_000 * 1_000.0])  # ten days ahead; a value in milliseconds
def test_a_reset_far_ahead_is_not_waited_for_past_a_minute(reset_in):
    clock, gate, patient, _ = setup()
    gate.acquire("logs", patient)
    gate.observe("logs", headers(remaining=0, reset=clock() + reset_in if reset_in < 1e6 else clock() * 1000))
    gate.release("logs")
    within_a_minute = Interrupt(clock=clock, deadline=clock() + RateGate.MAX_RESET_WAIT)
    assert not gate.acquire("logs", Interrupt(clock=clock, deadline=clock() + 30))  # it does wait for the bucket
    clock.now += RateGate.MAX_RESET_WAIT
    assert gate.acquire("logs", within_a_minute)  # then a probe goes to learn where the bucket is


def test_an_answer_to_an_older_call_is_stale():
    clock, gate, patient, _ = setup()
    gate.acquire("users_read", patient)
    gate.observe("users_read", headers(remaining=10, reset=clock() + 1))
    gate.release("users_read")
    sent, answer = threading.Event(), threading.Event()

    def older_call() -> None:
        gate.acquire("users_read", patient)
        sent.set()
        answer.wait()
        gate.observe("users_read", headers(remaining=15, reset=clock() + 1))  # counted before the newer one
        gate.release("users_read")

    worker = threading.Thread(target=older_call)
    worker.start()
    sent.wait()
    gate.acquire("users_read", patient)  # a newer call, answered first
    gate.observe("users_read", headers(remaining=5, reset=clock() + 1))
    gate.release("users_read")
    answer.set()
    worker.join()
    assert gate.snapshot()["users_read"]["remaining"] == 4  # 5, less the older call then still out


def test_groups_without_rate_limit_headers_are_not_paced():
    _, gate, patient, now_or_never = setup()
    gate.acquire("token", patient)
    gate.observe("token", {"content-type": "application/json"})
    gate.release("token")
    assert all(gate.acquire("token", now_or_never) for _ in range(50))


def test_a_stop_request_ends_the_wait():
    clock, gate, patient, _ = setup()
    gate.acquire("logs", patient)
    gate.observe("logs", headers(remaining=0, reset=clock() + 30))
    gate.release("logs")
    stopping = Interrupt(clock=clock)
    stopping.stop.set()
    assert not gate.acquire("logs", stopping)


@pytest.mark.parametrize("reset", ["nan", "inf", "-inf", "soon"])
def test_malformed_reset_headers_never_spin(reset):
    clock, gate, patient, _ = setup()
    assert gate.acquire("users_read", patient)
    gate.observe("users_read", {"x-ratelimit-limit": "10", "x-ratelimit-remaining": "0", "x-ratelimit-reset": reset})
    gate.release("users_read")
    done = threading.Event()

    def acquire():
        gate.acquire("users_read", patient)  # no usable reset: one probe goes to learn more
        done.set()

    worker = threading.Thread(target=acquire, daemon=True)
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
