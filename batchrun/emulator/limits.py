"""A sliding-window rate limit, as SciBox counts it: N requests in any 1-second window.

A request is admitted when fewer than ``capacity`` requests were admitted in the last
``period`` seconds; a throttled request is not admitted and does not count. The rule for a
rate that is not a whole number is :func:`window_for`. The clock is injected, so tests move
time by hand instead of sleeping.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]

MAX_CAPACITY = 10**9
"""Ceiling for a lifted limit (a huge ``rps_scale``): the window never fills in practice."""


class SlidingWindow:
    """Admits at most ``capacity`` requests in any ``period`` seconds; remembers its peak."""

    def __init__(self, capacity: int, period: float = 1.0, clock: Clock = time.monotonic) -> None:
        if capacity < 1 or period <= 0:
            raise ValueError(f"capacity must be >= 1 and period > 0, got {capacity}, {period}")
        self.capacity = capacity
        self.period = period
        self._clock = clock
        self._admitted: deque[float] = deque()
        self.peak = 0
        """The most requests admitted in any one window so far."""
        self.first: float | None = None
        self.last: float | None = None
        """When the first and the latest admitted requests came (the clock's time)."""

    def admit(self) -> float:
        """Admit one request and return 0.0, or refuse it and return the seconds until a slot."""
        now = self._clock()
        admitted = self._admitted
        horizon = now - self.period
        while admitted and admitted[0] <= horizon:
            admitted.popleft()
        if len(admitted) >= self.capacity:
            return max(admitted[0] - horizon, 1e-3)
        admitted.append(now)
        self.peak = max(self.peak, len(admitted))
        self.first = now if self.first is None else self.first
        self.last = now
        return 0.0

    @property
    def clock(self) -> Clock:
        """The clock this window reads (to stamp the requests it refuses)."""
        return self._clock

    def reset(self) -> None:
        """Forget every admission and the peak (the ``/stats/reset`` route)."""
        self._admitted.clear()
        self.peak = 0
        self.first = self.last = None


def window_for(rps: float, clock: Clock = time.monotonic) -> SlidingWindow:
    """The window that enforces ``rps`` requests per second, never more in any 1-second window.

    A rate of 1 or more admits ``floor(rps)`` requests per 1-second window (2.0 -> 2, 7.0 -> 7,
    2.5 -> 2: rounding down keeps the emulator at least as strict as the service). A rate below
    1 admits one request per ``1 / rps`` seconds (0.5 -> one every 2 s). A tiny epsilon keeps
    6.9999999 (from ``7 * scale / scale``) at 7.
    """
    if not rps > 0:
        raise ValueError(f"rps must be > 0, got {rps!r}")
    if rps < 1.0:
        return SlidingWindow(1, 1.0 / rps, clock)
    capacity = MAX_CAPACITY if rps >= MAX_CAPACITY else math.floor(rps + 1e-9)
    return SlidingWindow(capacity, 1.0, clock)
