"""Going as fast as the vendors allow, and no faster; and stopping when asked.

`Interrupt` is the one place a cycle waits: every wait ends early when the daemon is asked to stop,
and no wait runs past the cycle's deadline (the caller gets False and commits what it has).

`RateGate` reads Auth0's `x-ratelimit-*` headers from every response and lets through, per endpoint
group, only as many concurrent calls as the bucket has tokens left; when it is nearly empty the next
call waits until `x-ratelimit-reset` (an absolute UNIX time). Pacing before the limit costs a short
wait; collecting 429s costs a wasted call each.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping


class Interrupt:
    def __init__(self, *, stop: threading.Event | None = None, deadline: float | None = None, clock: Callable[[], float] = time.time) -> None:
        self.stop = stop or threading.Event()
        self.deadline = deadline
        self.clock = clock

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()

    @property
    def expired(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline

    @property
    def should_stop(self) -> bool:
        return self.stopping or self.expired

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - self.clock())

    def sleep(self, seconds: float) -> bool:
        """Wait `seconds`. False (without waiting) if that would pass the deadline; False if stopped."""
        if not math.isfinite(seconds) or seconds <= 0:
            return not self.should_stop
        remaining = self.remaining()
        if remaining is not None and seconds > remaining:
            return False
        return not self.stop.wait(seconds)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    return value


def _finite(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def retry_after_seconds(headers: Mapping[str, str], now: float, *, attempt: int = 1) -> float:
    """How long a 429 asks us to wait: Retry-After (seconds), else x-ratelimit-reset (an absolute
    UNIX time) - now; never less than a floor that doubles with each 429 in a row on the same call
    (1 s, 2 s, 4 s ... 60 s). The floor matters: a reset already past (our clock a second ahead of
    Auth0's) or a Retry-After of 0 would otherwise turn into a tight loop of 429s."""
    lowered = {k.lower(): v for k, v in headers.items()}
    asked = _finite(lowered.get("retry-after"))
    if asked is None:
        reset = _finite(lowered.get("x-ratelimit-reset"))
        asked = reset - now if reset is not None else None
    floor = min(60.0, 2.0 ** (attempt - 1))
    return min(max(asked if asked is not None else floor, floor), 3600.0)


class RateGate:
    """Paces calls per Auth0 endpoint group from the `x-ratelimit-*` headers, so calls wait for the
    bucket instead of collecting 429s, and concurrency is what the bucket has left, not the pool size.

    Per group it keeps an estimate of the tokens left:
    - before the group's first answer, one call goes alone (the probe): the bucket size is unknown,
      and on Auth0's Free plan it is 2;
    - an answer sets the estimate to the `x-ratelimit-remaining` Auth0 counted, less our other calls
      still in flight (Auth0 may not have counted them yet), so it errs low. Answers to calls sent
      before the last one used are stale and ignored (their calls may have been counted already);
    - each call sent takes one from the estimate;
    - a tenth of the bucket (`x-ratelimit-limit` // 10) is left for the tenant's other clients;
    - when only that is left, calls wait until `x-ratelimit-reset` (the UNIX second when tokens are
      added), then one probe goes and its answer says how many came. Tokens keep accruing while we
      wait, up to the bucket size, so the whole-second granularity of the header costs no throughput
      unless a second's refill exceeds the bucket;
    - a group whose answers carry no such headers is not paced.

    Every wait ends early when the cycle is asked to stop, and none runs past its deadline: `acquire`
    then returns False.
    """

    PROBE_WAIT_SLICE = 0.1  # how often a call waiting for a probe's answer checks for a stop request
    # Auth0's buckets refill within seconds: a reset further ahead (a clock far off ours, a value in
    # milliseconds) is not trusted past this; a probe after it learns where the bucket really is.
    MAX_RESET_WAIT = 60.0

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Condition()
        self._local = threading.local()  # per thread: the calls it has in flight (a stack: token calls nest)
        self._sequence = 0
        self.waited_seconds = 0.0

    def _bucket(self, group: str) -> "_Bucket":
        bucket = self._buckets.get(group)
        if bucket is None:
            bucket = self._buckets[group] = _Bucket()
        return bucket

    def _calls(self) -> list["_Call"]:
        calls = getattr(self._local, "calls", None)
        if calls is None:
            calls = self._local.calls = []
        return calls

    def acquire(self, group: str, interrupt: Interrupt) -> bool:
        """Before a call: wait until the group's bucket has room. False if stopped or past the deadline."""
        while True:
            with self._lock:
                bucket = self._bucket(group)
                wait = bucket.wait_before_call(self.clock())
                if wait == 0.0:
                    self._sequence += 1
                    call = _Call(group, self._sequence, probe=bucket.take())
                    self._calls().append(call)
                    return True
                if wait is None:  # a probe is out: its answer decides
                    if interrupt.should_stop or interrupt.remaining() == 0.0:
                        return False
                    self._lock.wait(self.PROBE_WAIT_SLICE)
                    continue
            self.waited_seconds += wait
            if not interrupt.sleep(wait):
                return False

    def release(self, group: str) -> None:
        """After the call, answered or not (a timeout, a dropped connection)."""
        calls = self._calls()
        call = next((c for c in reversed(calls) if c.group == group), None)
        if call is None:
            return
        calls.remove(call)
        with self._lock:
            bucket = self._bucket(group)
            bucket.in_flight -= 1
            if call.probe and bucket.probing:
                bucket.probing = False  # unanswered: the next call probes again
            self._lock.notify_all()

    def observe(self, group: str, headers: Mapping[str, str]) -> None:
        """An answer of `group` arrived (called from the HTTP client's response hook, on the calling thread)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        call = next((c for c in reversed(self._calls()) if c.group == group), None)
        reset_at = _finite(lowered.get("x-ratelimit-reset"))
        if reset_at is not None:
            reset_at = min(reset_at, self.clock() + self.MAX_RESET_WAIT)
        with self._lock:
            bucket = self._bucket(group)
            try:
                bucket.answered(
                    sequence=call.sequence if call else self._sequence,
                    remaining=int(lowered["x-ratelimit-remaining"]) if "x-ratelimit-remaining" in lowered else None,
                    limit=int(lowered.get("x-ratelimit-limit") or 0) or None,
                    reset_at=reset_at,
                )
            except ValueError:
                bucket.answered(sequence=call.sequence if call else self._sequence, remaining=None, limit=None, reset_at=None)
            self._lock.notify_all()

    def snapshot(self) -> dict[str, dict[str, float | int | None]]:
        with self._lock:
            return {g: {"limit": b.limit, "remaining": b.remaining, "reset_at": b.reset_at} for g, b in self._buckets.items()}


@dataclass
class _Call:
    group: str
    sequence: int
    probe: bool


@dataclass
class _Bucket:
    """What we know of one endpoint group's token bucket. Guarded by the gate's lock."""

    metered: bool = True  # False once an answer came without rate-limit headers
    known: bool = False  # an answer told us `remaining` since the last reset we waited for
    probing: bool = False
    remaining: int = 0  # our estimate of the tokens left
    limit: int | None = None
    reset_at: float | None = None
    in_flight: int = 0
    last_sequence: int = 0  # the call whose answer set `remaining`

    @property
    def reserve(self) -> int:
        return (self.limit or 0) // 10

    def wait_before_call(self, now: float) -> float | None:
        """0.0: go now; None: wait for the probe's answer; else seconds to wait for the reset."""
        if not self.metered:
            return 0.0
        if self.known and self.remaining > self.reserve:
            return 0.0
        if self.known and self.reset_at is not None and self.reset_at > now:
            return self.reset_at - now
        if self.known:
            self.known = False  # the reset has come: tokens were added, a probe tells how many
        return None if self.probing else 0.0

    def take(self) -> bool:
        """A call goes; True if it is the probe."""
        self.in_flight += 1
        if self.metered and not self.known:
            self.probing = True
            return True
        self.remaining -= 1
        return False

    def answered(self, *, sequence: int, remaining: int | None, limit: int | None, reset_at: float | None) -> None:
        if remaining is None:
            self.metered, self.known, self.probing = False, True, False
            return
        self.metered = True
        if sequence < self.last_sequence:
            return  # an older call's answer: a newer one already told us more
        self.last_sequence = sequence
        self.remaining = remaining - max(self.in_flight - 1, 0)  # our other calls may not be counted yet
        self.limit = limit or self.limit
        self.reset_at = reset_at
        self.known = True
        self.probing = False
