"""How many requests are in flight: ``InFlight`` bounds them by Little's law.

In flight = rate × latency. It keeps ``HEADROOM_IN_FLIGHT`` × (total rate × latency) + 2 places
open, where latency is the larger of a moving average of answers and the age of the oldest
request still out (so a slow first answer already widens the window), up to ``max_in_flight``.
A fixed number overrides it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence

from batchrun.clock import Clock
from batchrun.send.pacing import Pacer

HEADROOM_IN_FLIGHT = 1.5
FIRST_LATENCY_S = 1.0
RECHECK_S = 0.1


class InFlight:
    """A gate on the requests in flight, sized by Little's law or fixed."""

    def __init__(
        self,
        pacers: Sequence[Pacer],
        max_in_flight: int,
        fixed: int | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._pacers = pacers
        self._max = max_in_flight
        self._fixed = fixed
        self._clock = clock
        self._latency: float | None = None
        self._holders = 0
        self._started: dict[int, float] = {}
        """When each request still out was sent, oldest first."""
        self._tickets = itertools.count()
        self._freed = asyncio.Event()
        """Set when a place is given back. (Not a Condition under ``wait_for``: on Python 3.11
        a cancellation during ``wait_for``'s own cleanup leaves its inner task re-acquiring
        the Condition's lock forever, which hung the shutdown after a Ctrl-C.)"""

    @property
    def in_flight(self) -> int:
        """Places held: requests sent and not yet answered, and those waiting for a slot."""
        return self._holders

    def limit(self) -> int:
        """Requests allowed in flight now."""
        if self._fixed is not None:
            return self._fixed
        rate = sum(pacer.rate for pacer in self._pacers)
        wanted = HEADROOM_IN_FLIGHT * rate * self.latency() + 2
        return max(1, min(self._max, math.ceil(wanted)))

    def latency(self) -> float:
        """Seconds an answer takes: the moving average, or the oldest request's age if longer."""
        oldest = next(iter(self._started.values()), None)
        age = self._clock() - oldest if oldest is not None else 0.0
        return max(self._latency if self._latency is not None else FIRST_LATENCY_S, age)

    def observe(self, latency_s: float) -> None:
        """Feed one answer's latency into the moving average."""
        if self._latency is None:
            self._latency = latency_s
        else:
            self._latency += 0.2 * (latency_s - self._latency)

    @contextlib.asynccontextmanager
    async def permit(self) -> AsyncIterator[Callable[[], None]]:
        """Hold one of the in-flight places; call the yielded function when the request is
        really sent (after its pacing slot), so waiting for a slot is not taken for latency."""
        while self.in_flight >= self.limit():
            self._freed.clear()
            with contextlib.suppress(TimeoutError):  # the limit grows as time passes
                async with asyncio.timeout(RECHECK_S):
                    await self._freed.wait()
        self._holders += 1
        ticket = next(self._tickets)

        def sent() -> None:
            self._started[ticket] = self._clock()

        try:
            yield sent
        finally:
            self._holders -= 1
            self._started.pop(ticket, None)
            self._freed.set()
