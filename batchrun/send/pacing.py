"""How fast and how many: per-model pacing that adapts to 429s, and the in-flight limit.

Pacing is two parts composed. A *slot source* hands out send slots spaced by an interval: the
generic cell rate algorithm (GCRA) with a burst of 1, kept here in memory (``LocalSlots``) or
for the whole team in Redis (``batchrun.send.teampacing.TeamSlots``). The service counts
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

Behind a gateway (LiteLLM Proxy) the limit is a budget per window, usually a minute, and the
service states it (``batchrun.service.ratelimits``). Then:

- a stated limit of L requests per minute caps the rate at ``HEADROOM`` × L / 60, whatever
  the job file says (a job set to 6 RPS on a 2 RPS key paces at 1.96 from its first answer);
- the requests remaining in the window are spread over the time left in it (``WindowBudget``):
  processes sharing a key without a shared limiter slow down together as the budget runs
  low, instead of exhausting it early and waiting out the window; with 0 left the model
  holds until the window ends;
- a 429 that names a window (it ran out) holds the model until the window's end as estimated
  from the answers, or for at most ``PROBE_S`` when that is unknown (a gateway's
  ``retry-after: 60`` is often a whole window, not the time left), and keeps the rate: no
  multiplicative cut for a window that simply ran out.

No hold and no spacing read from a window outlasts that window: a hold ends when its window
does (held models look again every ``RECHECK_S``, and an answer showing a new window lifts the
hold), and a slot spaced by a window's budget is never further off than that window's end.
Every hold is told to ``on_hold`` with its length and its reason (the run's event log).

With no such headers (a bare vLLM, the local emulator), the AIMD rule above is the whole story.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Protocol

from batchrun.clock import Clock, Sleep
from batchrun.service.ratelimits import WINDOW_S, Quota, WindowBudget

HEADROOM = 0.98
DECREASE = 0.7
RECOVERY_PER_S = 0.0025
COOLDOWN_S = 0.5
FLOOR = 0.02
PROBE_S = 5.0
RECHECK_S = 1.0
"""A held model looks again this often: a hold lifted by a new window ends within this."""

SPENT = "window spent"
"""Hold reason: the window's budget is 0; the model waits for the window's end."""
THROTTLED = "window 429"
"""Hold reason: a 429 said a window ran out; the model waits for its estimated end."""
PROBE = "window 429, end unknown"
"""Hold reason: as ``THROTTLED``, with no estimated end: a short wait, then a probe."""
SPREAD = "window budget"
"""Hold reason: the window's budget spaces slots wider than the rate does."""

OnHold = Callable[[float, str], None]
"""Told of every hold a pacer decides: its seconds and its reason."""


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
        on_hold: OnHold = lambda seconds, reason: None,
    ) -> None:
        if rps <= 0:
            raise ValueError(f"a model's rate must be positive, got {rps}")
        self._headroom = headroom
        self._configured = rps * headroom
        self.ceiling = self._configured
        self.rate = self.ceiling
        self.decreases = 0
        self._slots = slots or LocalSlots(clock=clock, sleep=sleep)
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._decreased_at = -math.inf
        self._adjusted_at = clock()
        self._budget = WindowBudget()
        self._held_until = -math.inf
        self.on_hold = on_hold

    async def slot(self) -> None:
        """Wait for this model's next send slot."""
        self._waiting += 1
        try:
            async with self._lock:
                await self._wait_for_window()
                await self._slots.take(self._interval())
        finally:
            self._waiting -= 1

    async def _wait_for_window(self) -> None:
        """Wait while the model is held, looking again every ``RECHECK_S``: a new window seen
        in the meantime (an answer in flight) lifts the hold."""
        told = False
        while (hold := self._hold()) > 0:
            if not told and self._held_until <= self._clock():
                self.on_hold(hold, SPENT)
            told = True
            await self._sleep(min(hold, RECHECK_S))

    def expected_wait(self) -> float:
        """Seconds until a new request would leave: for choosing among a pool's models."""
        return self._hold() + self._slots.expected_wait() + self._waiting / self._pace()

    def _hold(self) -> float:
        """Seconds the model must not send: a window ran out, or its budget is spent."""
        now = self._clock()
        hold = self._held_until - now
        if self._budget.rate(now) == 0:
            hold = max(hold, self._budget.reset_in(now) or 0.0)
        return max(hold, 0.0)

    def _pace(self, at: float | None = None) -> float:
        """The rate slots are spaced at (``at`` a time, by default now): the adaptive rate,
        or less if the window's budget allows less."""
        budget = self._budget.rate(self._clock() if at is None else at)
        return max(min(self.rate, budget), self.ceiling * FLOOR)

    def _interval(self) -> float:
        """Seconds from the coming slot to the next: the adaptive rate's spacing, or the
        window's budget's when it allows less, but never past the window's end."""
        at = self._clock() + self._slots.expected_wait()  # when the coming slot is
        spacing = 1 / self._pace(at)
        if spacing <= 1 / max(self.rate, self.ceiling * FLOOR):
            return spacing
        spacing = min(spacing, self._budget.reset_in(at) or spacing)
        self.on_hold(spacing, SPREAD)
        return spacing

    def throttled(self, window_reset: float | None = None) -> None:
        """A 429 came back. One that names a window (``window_reset``, seconds) holds the model
        until the window ends and keeps the rate; any other slows down (once per cooldown)."""
        now = self._clock()
        if window_reset is not None:
            self._budget.observe(Quota(remaining=0), now)  # the window ran out: 0 left
            known = self._budget.reset_in(now)
            latest = self._budget.latest_end_in(now) or PROBE_S
            wait = known if known is not None else min(window_reset, PROBE_S, latest)
            if now + wait > self._held_until:
                self._held_until = now + wait
                self.on_hold(wait, THROTTLED if known is not None else PROBE)
            return
        if now - self._decreased_at < COOLDOWN_S:
            return
        self.rate = max(self.rate * DECREASE, self.ceiling * FLOOR)
        self.decreases += 1
        self._decreased_at = self._adjusted_at = now

    def answered(self, quota: Quota | None = None) -> None:
        """A request was answered: probe back toward the ceiling, additively; learn the
        limit and the window's budget the service stated, if it did."""
        now = self._clock()
        if quota is not None:
            self._learn(quota, now)
        self.rate = min(
            self.ceiling, self.rate + RECOVERY_PER_S * self.ceiling * (now - self._adjusted_at)
        )
        self._adjusted_at = now

    def _learn(self, quota: Quota, now: float) -> None:
        if quota.limit:
            self.ceiling = min(self._configured, quota.limit / WINDOW_S * self._headroom)
            self.rate = min(self.rate, self.ceiling)
        started = self._budget.observe(quota, now)
        if started:
            self._held_until = -math.inf  # a hold read in the last window ends with it

    def window_left(self) -> float | None:
        """Seconds until the current window ends, as estimated from the answers (None:
        unknown)."""
        return self._budget.reset_in(self._clock())
