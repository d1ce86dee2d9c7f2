"""How fast and how many: per-model pacing that adapts to 429s, and the in-flight limit.

Pacing is two parts composed. A *slot source* hands out send slots spaced by an interval: the
generic cell rate algorithm (GCRA) with a burst of 1, kept here in memory (``LocalSlots``) or
for the whole team in Redis (``batchrun.service.teampacing.TeamSlots``). The service counts
requests in a sliding 1-second window, so a 2 RPS model must see one request every 0.5 s,
never two at once; a timer that fires late pushes the next slot back instead of catching up.
Both sources answer ``expected_wait()``, so a model pool chooses well however it is paced.

``Pacer`` owns one model's adaptive rate and asks its slot source for slots one at a time
(aiolimiter's ``AsyncLimiter(1, 1 / rate)`` spaces a fixed rate the same way; ours must change
its rate while waiters queue, which aiolimiter does not offer). The rate starts a little under
the limit (``HEADROOM``) and adapts additive-increase / multiplicative-decrease: a 429 cuts it by
``DECREASE`` (at most once per ``COOLDOWN_S``, so the 429s of one burst count once); every
second without one gives back ``RECOVERY_PER_S`` of the ceiling, so a rate cut by 30 % probes
back over about two minutes and a settled run meets about one 429 a minute. A teammate sharing
the quota, or a limit lower than configured, makes the runner settle on the share it can have.

``InFlight`` bounds the requests in flight by Little's law: in flight = rate × latency. It keeps
``HEADROOM_IN_FLIGHT`` × (total rate × latency) + 2 slots open, where latency is the larger of a
moving average of answers and the age of the oldest request still out (so a slow first answer
already widens the window), up to ``max_in_flight``. A fixed number overrides it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

HEADROOM = 0.98
DECREASE = 0.7
RECOVERY_PER_S = 0.0025
COOLDOWN_S = 0.5
FLOOR = 0.02
HEADROOM_IN_FLIGHT = 1.5
FIRST_LATENCY_S = 1.0
RECHECK_S = 0.1


class SlotSource(Protocol):
    """Where a Pacer's send slots come from."""

    async def take(self, interval_s: float) -> None:
        """Wait for the next slot; the one after it is ``interval_s`` later."""

    def expected_wait(self) -> float:
        """Seconds until the next slot would be free (a cheap local estimate)."""


class LocalSlots:
    """GCRA with a burst of 1 in this process: one slot every interval, no catch-up."""

    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._next = clock()

    async def take(self, interval_s: float) -> None:
        wait = self._next - self._clock()
        if wait > 0:
            await self._sleep(wait)
        self._next = max(self._clock(), self._next) + interval_s

    def expected_wait(self) -> float:
        return max(self._next - self._clock(), 0.0)


class Pacer:
    """One model's adaptive rate; slots from a slot source, taken one at a time."""

    def __init__(
        self,
        rps: float,
        slots: SlotSource | None = None,
        *,
        headroom: float = HEADROOM,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rps <= 0:
            raise ValueError(f"a model's rate must be positive, got {rps}")
        self.ceiling = rps * headroom
        self.rate = self.ceiling
        self.decreases = 0
        self._slots = slots or LocalSlots(clock=clock, sleep=sleep)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._decreased_at = -math.inf
        self._adjusted_at = clock()

    async def slot(self) -> None:
        """Wait for this model's next send slot."""
        self._waiting += 1
        try:
            async with self._lock:
                await self._slots.take(1 / self.rate)
        finally:
            self._waiting -= 1

    def expected_wait(self) -> float:
        """Seconds until a new request would leave: for choosing among a pool's models."""
        return self._slots.expected_wait() + self._waiting / self.rate

    def throttled(self) -> None:
        """A 429 came back: slow down (once per cooldown)."""
        now = self._clock()
        if now - self._decreased_at < COOLDOWN_S:
            return
        self.rate = max(self.rate * DECREASE, self.ceiling * FLOOR)
        self.decreases += 1
        self._decreased_at = self._adjusted_at = now

    def answered(self) -> None:
        """A request was answered: probe back toward the ceiling, additively."""
        now = self._clock()
        self.rate = min(
            self.ceiling, self.rate + RECOVERY_PER_S * self.ceiling * (now - self._adjusted_at)
        )
        self._adjusted_at = now


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
