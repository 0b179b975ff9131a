"""Going as fast as the vendors allow, and no faster; and stopping when asked.

`Interrupt` is the one place a cycle waits: every wait ends early when the daemon is asked to stop,
and no wait runs past the cycle's deadline (the caller gets False and commits what it has).

`RateGate` reads Auth0's `x-ratelimit-*` headers from every response and holds the next request of
the same endpoint group when the bucket is nearly empty, until `x-ratelimit-reset` (an absolute UNIX
time). Pacing before the limit costs a short wait; collecting 429s costs a wasted call each.
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


@dataclass
class _Bucket:
    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None


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
    """Per endpoint group: remember what the last response said is left; wait before the bucket empties."""

    def __init__(self, *, reserve: int = 1, clock: Callable[[], float] = time.time) -> None:
        self.reserve = reserve
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self.waited_seconds = 0.0

    def observe(self, group: str, headers: Mapping[str, str]) -> None:
        lowered = {k.lower(): v for k, v in headers.items()}
        if "x-ratelimit-remaining" not in lowered:
            return
        try:
            bucket = _Bucket(
                limit=int(lowered.get("x-ratelimit-limit", "0") or 0) or None,
                remaining=int(lowered["x-ratelimit-remaining"]),
                reset_at=_finite(lowered.get("x-ratelimit-reset")),
            )
        except ValueError:
            return  # a malformed header is no reason to stop; we just cannot pace on it
        with self._lock:
            self._buckets[group] = bucket

    def take(self, group: str, interrupt: Interrupt) -> bool:
        """Call before a request. Waits if the group's bucket is at the reserve; False if interrupted."""
        while True:
            with self._lock:
                bucket = self._buckets.get(group)
                if bucket is None or bucket.remaining is None or bucket.remaining > self.reserve:
                    if bucket is not None and bucket.remaining is not None:
                        bucket.remaining -= 1  # count our own in-flight calls between responses
                    return True
                wait = (bucket.reset_at or 0) - self.clock()
                if wait <= 0:
                    # The reset time has come: the bucket has refilled by at least one.
                    bucket.remaining = (bucket.remaining or 0) + 1
                    bucket.reset_at = None
                    continue
            self.waited_seconds += min(wait, 60.0)
            if not interrupt.sleep(min(wait, 60.0) + 0.05):
                return False

    def snapshot(self) -> dict[str, dict[str, float | int | None]]:
        with self._lock:
            return {g: {"limit": b.limit, "remaining": b.remaining, "reset_at": b.reset_at} for g, b in self._buckets.items()}
