"""Rate windows: SciBox's sliding 1-second window, and the fixed wall-clock window of a gateway.

:class:`SlidingWindow` admits a request when fewer than ``capacity`` requests were admitted in
the last ``period`` seconds, as SciBox counts (N requests in any 1-second window).
:class:`FixedWindow` counts per window ``[k * period, (k + 1) * period)`` of the wall clock, as
LiteLLM Proxy counts a deployment's ``rpm`` (per calendar minute): the count starts again at
each boundary, so up to twice the capacity can pass within one period across a boundary.
A throttled request is not admitted and does not count. :func:`window_for` picks the window
and its capacity. Clocks are injected, so tests move time by hand instead of sleeping.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable

from batchrun.clock import Clock

MAX_CAPACITY = 10**9
"""Ceiling for a lifted limit (a huge ``rps_scale``): the window never fills in practice."""


class Window(ABC):
    """What every rate window has: its capacity and period, and what it admitted so far.

    ``peak`` is the most requests admitted in any one window; ``first`` and ``last`` are when
    the first and the latest admitted requests came, on ``clock`` (the monotonic clock, so a
    benchmark compares them with its own times).
    """

    def __init__(self, capacity: int, period: float, clock: Clock) -> None:
        if capacity < 1 or period <= 0:
            raise ValueError(f"capacity must be >= 1 and period > 0, got {capacity}, {period}")
        self.capacity = capacity
        self.period = period
        self._clock = clock
        self.peak = 0
        self.first: float | None = None
        self.last: float | None = None

    @abstractmethod
    def admit(self) -> float:
        """Admit one request and return 0.0, or refuse it and return the seconds until a slot."""

    @abstractmethod
    def remaining(self) -> int:
        """How many more requests the window would admit now."""

    @property
    def clock(self) -> Clock:
        """The clock that stamps admissions (and the requests this window refuses)."""
        return self._clock

    def reset(self) -> None:
        """Forget every admission and the peak (the ``/stats/reset`` route)."""
        self.peak = 0
        self.first = self.last = None

    def _admitted(self, count: int) -> None:
        """Note one admission; ``count`` requests are now in the window."""
        self.peak = max(self.peak, count)
        now = self._clock()
        self.first = now if self.first is None else self.first
        self.last = now


class SlidingWindow(Window):
    """Admits at most ``capacity`` requests in any ``period`` seconds of ``clock``."""

    def __init__(self, capacity: int, period: float = 1.0, clock: Clock = time.monotonic) -> None:
        super().__init__(capacity, period, clock)
        self._times: deque[float] = deque()

    def admit(self) -> float:
        """Admit one request and return 0.0, or refuse it and return the seconds until a slot."""
        now = self._clock()
        horizon = self._expire(now)
        times = self._times
        if len(times) >= self.capacity:
            return max(times[0] - horizon, 1e-3)
        times.append(now)
        self._admitted(len(times))
        return 0.0

    def remaining(self) -> int:
        """How many more requests the window would admit now."""
        self._expire(self._clock())
        return self.capacity - len(self._times)

    def reset(self) -> None:
        """Forget every admission and the peak."""
        super().reset()
        self._times.clear()

    def _expire(self, now: float) -> float:
        """Drop admissions older than one period; returns the horizon ``now - period``."""
        horizon = now - self.period
        while self._times and self._times[0] <= horizon:
            self._times.popleft()
        return horizon


class FixedWindow(Window):
    """Admits at most ``capacity`` requests per window ``[k * period, (k + 1) * period)`` of
    ``wall`` (``time.time``: windows align to the calendar, as LiteLLM's per-minute counts do).

    A refused request waits until the current window ends. Admissions are stamped on ``clock``.
    """

    def __init__(
        self,
        capacity: int,
        period: float,
        wall: Clock = time.time,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(capacity, period, clock)
        self._wall = wall
        self._index: int | None = None
        self._count = 0

    def admit(self) -> float:
        """Admit one request and return 0.0, or refuse it and return the seconds until the
        current window ends."""
        now = self._wall()
        self._roll(now)
        if self._count >= self.capacity:
            return max(self._ends_at() - now, 1e-3)
        self._count += 1
        self._admitted(self._count)
        return 0.0

    def remaining(self) -> int:
        """How many more requests the current window would admit."""
        self._roll(self._wall())
        return self.capacity - self._count

    def reset(self) -> None:
        """Forget every admission and the peak."""
        super().reset()
        self._index, self._count = None, 0

    def _roll(self, now: float) -> None:
        """Start counting afresh when ``now`` is in a later window than the one counted."""
        index = math.floor(now / self.period)
        if index != self._index:
            self._index, self._count = index, 0

    def _ends_at(self) -> float:
        assert self._index is not None  # _roll ran first
        return (self._index + 1) * self.period


def window_for(
    rps: float, clock: Clock = time.monotonic, window_s: float = 1.0, wall: Clock = time.time
) -> Window:
    """The window that enforces ``rps`` requests per second.

    With ``window_s`` 1.0 (SciBox) it is a :class:`SlidingWindow`: a rate of 1 or more admits
    ``floor(rps)`` requests per 1-second window (2.0 -> 2, 7.0 -> 7, 2.5 -> 2: rounding down
    keeps the emulator at least as strict as the service); a rate below 1 admits one request
    per ``1 / rps`` seconds (0.5 -> one every 2 s). A tiny epsilon keeps 6.9999999 (from
    ``7 * scale / scale``) at 7. Any other ``window_s`` gives a :class:`FixedWindow` of
    ``round(rps * window_s)`` requests (at least 1) per window of ``wall``: 2 RPS and 60 s
    -> 120 per calendar minute.
    """
    if not rps > 0:
        raise ValueError(f"rps must be > 0, got {rps!r}")
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0, got {window_s!r}")
    if window_s != 1.0:
        return FixedWindow(_whole(rps * window_s, round), window_s, wall, clock)
    if rps < 1.0:
        return SlidingWindow(1, 1.0 / rps, clock)
    return SlidingWindow(_whole(rps + 1e-9, math.floor), 1.0, clock)


def _whole(requests: float, rounding: Callable[[float], int]) -> int:
    """``requests`` rounded to a capacity: at least 1, at most :data:`MAX_CAPACITY`."""
    return MAX_CAPACITY if requests >= MAX_CAPACITY else max(1, rounding(requests))
