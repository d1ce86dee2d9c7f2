"""Pacing behind LiteLLM's per-minute windows, on virtual time: two shards of a job share one
team limiter (the Redis GCRA, kept in memory on the loop's clock) and send to the emulator's
``--window-s 60 --gateway litellm`` window, which answers with LiteLLM's quota headers, read
as the client reads them. Minutes of traffic run in milliseconds, the same way every time.

The stall of issue 23: a run that starts a few seconds before a calendar minute ends sees the
minute's reset as a jump too small to tell from answers out of order, so the pacer estimated
the window from its first answer; when that estimate ran out, it took the count of the window
still running as a fresh window's, spread its last few requests over a whole minute, and the
shared limiter carried that spacing to both shards: about 20 s with nothing sent.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from dataclasses import dataclass, field

import pytest

from batchrun.emulator.gateways import GATEWAYS
from batchrun.emulator.limits import window_for
from batchrun.send import pacing
from batchrun.send.pacing import PROBE_S, Pacer
from batchrun.send.teampacing import TeamLimiter, TeamSlots
from batchrun.service.ratelimits import Quota, read_quota, read_throttle
from tests.support import FakeClock
from tests.virtualtime import run_virtual

QUOTA_RPS = 2.0
"""rpm 120, SciBox's 2 RPS as LiteLLM counts it."""
MINUTE_S = 60.0
LATENCY_S = 0.05
"""What the gateway runs measured: answers under 60 ms."""
ROWS = 300
"""As the gateway test's shared-key scenarios: two shards of 150 rows, about 150 s."""
WORKERS = 3
"""Requests a shard keeps in flight: 1.5 x rate x latency rounded up generously."""


class MemoryTeam(TeamLimiter):
    """The team limiter's GCRA (burst 1), as the Redis script runs it, kept here on the
    loop's clock. Its Redis client is created (no connection) and never used."""

    def __init__(self) -> None:
        super().__init__("redis://127.0.0.1:9/0", "test")
        self._tat: dict[str, float] = {}

    async def reserve(self, model: str, interval_s: float) -> float:
        now = asyncio.get_running_loop().time()
        tat = max(self._tat.get(model, now), now)
        self._tat[model] = tat + interval_s
        return tat - now


@dataclass
class Run:
    """What the shards sent (time, shard, status) and every hold their pacers decided."""

    phase_s: float
    sent: list[tuple[float, int, int]] = field(default_factory=list)
    holds: list[tuple[float, float, str]] = field(default_factory=list)
    wall_s: float = 0.0

    def window_end(self, at: float) -> float:
        """When the gateway's calendar minute that holds ``at`` ends (on the loop's clock)."""
        return math.floor((at + self.phase_s) / MINUTE_S + 1) * MINUTE_S - self.phase_s

    def share(self) -> float:
        """Rows answered per second over the run, as a share of the quota."""
        answered = sum(1 for _, _, status in self.sent if status == 200)
        return answered / self.wall_s / QUOTA_RPS

    def longest_silence(self) -> float:
        times = sorted(at for at, _, _ in self.sent)
        return max(later - earlier for earlier, later in itertools.pairwise(times))


async def two_shards(phase_s: float, shared: bool = True) -> Run:
    """Two shards of ``ROWS`` rows through one gateway window whose calendar minute is
    ``phase_s`` seconds old when the run starts; ``shared``: through one team limiter, or each
    paced alone."""
    loop = asyncio.get_running_loop()
    run = Run(phase_s)
    window = window_for(QUOTA_RPS, loop.time, MINUTE_S, wall=lambda: loop.time() + phase_s)
    gateway, team = GATEWAYS["litellm"], MemoryTeam()

    async def shard(number: int) -> None:
        def held(seconds: float, reason: str) -> None:
            run.holds.append((loop.time(), seconds, reason))

        slots = TeamSlots("chat", team, clock=loop.time, sleep=asyncio.sleep) if shared else None
        pacer = Pacer(QUOTA_RPS, slots, clock=loop.time, sleep=asyncio.sleep)
        pacer.on_hold = held
        rows = iter(range(ROWS // 2))

        async def worker() -> None:
            for _ in rows:
                while not await send(pacer, number):
                    pass  # a window 429: the pacer holds, the row is sent again

        async with asyncio.TaskGroup() as group:
            for _ in range(WORKERS):
                group.create_task(worker())

    async def send(pacer: Pacer, number: int) -> bool:
        await pacer.slot()
        sent_at, wait = loop.time(), window.admit()
        status = 200 if wait == 0 else 429
        headers = gateway.quota_headers(window) if status == 200 else {}
        error = gateway.throttled("chat", window, wait) if status == 429 else None
        await asyncio.sleep(LATENCY_S)
        run.sent.append((sent_at, number, status))
        if error is None:
            pacer.answered(read_quota(headers))
        else:
            pacer.throttled(read_throttle(error.headers or {}, None).window_reset)
        return error is None

    async with asyncio.TaskGroup() as group:
        for number in (1, 2):
            group.create_task(shard(number))
    run.wall_s = loop.time()
    return run


@pytest.mark.parametrize("phase_s", [0.0, 15.0, 30.0, 45.0, 54.3, 57.3, 59.0])
def test_two_shards_on_one_limiter_use_the_quota_without_a_stall(phase_s: float) -> None:
    run = run_virtual(two_shards(phase_s))

    assert run.share() >= 0.95, run.holds
    assert run.longest_silence() <= PROBE_S, run.holds


@pytest.mark.parametrize("phase_s", [0.0, 30.0, 54.3, 57.3])
def test_no_hold_outlasts_the_window_it_was_read_for(phase_s: float) -> None:
    run = run_virtual(two_shards(phase_s, shared=False))  # they overrun windows: 429s, holds

    estimated = [hold for hold in run.holds if hold[2] != pacing.PROBE]
    late = [
        (at, seconds, reason)
        for at, seconds, reason in estimated
        if at + seconds > run.window_end(at) + 1 / QUOTA_RPS  # (an answer's spacing late)
    ]
    assert estimated and late == []
    assert all(seconds <= PROBE_S for _, seconds, reason in run.holds if reason == pacing.PROBE)


def held_pacer(clock: FakeClock) -> tuple[Pacer, list[tuple[float, str]]]:
    """A 2 RPS pacer on ``clock`` that has seen a window start at 101 (it ends at 160 or
    later), and the holds it tells of."""
    holds: list[tuple[float, str]] = []
    pacer = Pacer(QUOTA_RPS, clock=clock, sleep=clock.sleep, on_hold=lambda *h: holds.append(h))
    pacer.answered(Quota(120, 2))
    clock.now += 1.0
    pacer.answered(Quota(120, 119))
    return pacer, holds


async def test_a_window_429_holds_until_the_window_ends_and_says_why() -> None:
    clock = FakeClock(100.0)
    pacer, holds = held_pacer(clock)
    clock.now = 150.0

    pacer.throttled(window_reset=60.0)  # LiteLLM: a whole window, not what is left of it
    await pacer.slot()

    assert clock.now == pytest.approx(160.0)
    assert [(round(seconds, 6), reason) for seconds, reason in holds] == [(10.0, pacing.THROTTLED)]


async def test_an_answer_showing_a_new_window_lifts_a_hold() -> None:
    clock = FakeClock(100.0)
    pacer, _ = held_pacer(clock)
    clock.now = 150.0
    pacer.throttled(window_reset=60.0)

    async def answer_in_flight() -> None:
        await clock.sleep(2.5)
        pacer.answered(Quota(120, 117))  # the window reset early (a reset limiter's window)

    async with asyncio.TaskGroup() as group:
        group.create_task(answer_in_flight())
        group.create_task(pacer.slot())

    assert clock.now < 150.0 + 2.5 + 2 * pacing.RECHECK_S


async def test_a_budget_spacing_never_passes_the_window_end_and_says_why() -> None:
    clock = FakeClock(100.0)
    pacer, holds = held_pacer(clock)
    clock.now = 155.0
    pacer.answered(Quota(120, 1))  # 1 left for the last 5 s

    await pacer.slot()
    start = clock.now
    await pacer.slot()

    assert clock.now - start == pytest.approx(5.0)
    assert [(round(seconds, 6), reason) for seconds, reason in holds] == [(5.0, pacing.SPREAD)]
