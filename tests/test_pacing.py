"""Pacing and the in-flight limit, on a fake clock: no real sleeping."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from batchrun.send.inflight import InFlight
from batchrun.send.pacing import DECREASE, HEADROOM, PROBE_S, Pacer
from batchrun.send.teampacing import TeamLimiter, TeamSlots
from batchrun.service.ratelimits import Quota
from tests.support import FakeClock


async def test_slots_are_evenly_spaced_never_bursts() -> None:
    clock = FakeClock(100.0)
    pacer = Pacer(2.0, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(6):
        await pacer.slot()
        times.append(clock.now)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps == pytest.approx([1 / (2.0 * HEADROOM)] * 5)


async def test_a_late_timer_does_not_catch_up() -> None:
    clock = FakeClock(100.0)
    pacer = Pacer(2.0, clock=clock, sleep=clock.sleep)
    await pacer.slot()
    clock.now += 3.0  # the loop was busy: three seconds without a request
    await pacer.slot()
    sent = clock.now
    await pacer.slot()
    assert clock.now - sent == pytest.approx(1 / (2.0 * HEADROOM))


async def test_concurrent_waiters_are_served_one_per_interval() -> None:
    clock = FakeClock(100.0)
    pacer = Pacer(4.0, clock=clock, sleep=clock.sleep)
    times: list[float] = []

    async def take() -> None:
        await pacer.slot()
        times.append(clock.now)

    async with asyncio.TaskGroup() as group:
        for _ in range(8):
            group.create_task(take())
    times.sort()
    in_any_second = max(sum(1 for t in times if start <= t < start + 1) for start in times)
    assert in_any_second <= 4


def test_429_cuts_the_rate_once_per_window_then_it_recovers_additively() -> None:
    clock = FakeClock(100.0)
    pacer = Pacer(2.0, clock=clock)
    ceiling = pacer.rate
    pacer.throttled()
    pacer.throttled()  # the same burst's other 429s count once
    assert pacer.rate == pytest.approx(ceiling * DECREASE)
    clock.now += 1.5
    pacer.throttled()
    assert pacer.rate == pytest.approx(ceiling * DECREASE**2)
    low = pacer.rate
    clock.now += 10
    pacer.answered()
    assert low < pacer.rate < ceiling
    clock.now += 1000
    pacer.answered()
    assert pacer.rate == pytest.approx(ceiling)


async def test_expected_wait_prefers_the_idle_model() -> None:
    clock = FakeClock(100.0)
    busy = Pacer(2.0, clock=clock, sleep=clock.sleep)
    idle = Pacer(2.0, clock=clock, sleep=clock.sleep)
    await busy.slot()  # its next slot is half a second away

    assert idle.expected_wait() == 0.0
    assert busy.expected_wait() == pytest.approx(1 / (2.0 * HEADROOM))


class BusyTeam(TeamLimiter):
    """A team limiter whose model ``busy`` is reserved ``ahead`` seconds out by others. It
    never talks to Redis: its client is created (no connection yet) and never used."""

    def __init__(self, ahead: float) -> None:
        super().__init__("redis://127.0.0.1:9/0", "test")
        self.ahead = ahead

    async def reserve(self, model: str, interval_s: float) -> float:
        return self.ahead if model == "busy" else 0.0


async def test_team_slots_tell_the_pool_which_model_the_team_keeps_busy() -> None:
    clock = FakeClock(100.0)
    team = BusyTeam(ahead=0.0)
    pacers = {
        name: Pacer(2.0, TeamSlots(name, team, clock=clock, sleep=clock.sleep), clock=clock)
        for name in ("busy", "free")
    }
    for pacer in pacers.values():
        await pacer.slot()
    team.ahead = 5.0  # another process has reserved the next five seconds of "busy"

    await pacers["busy"].slot()
    waits = {name: pacer.expected_wait() for name, pacer in pacers.items()}

    assert waits["free"] == 0.0
    assert waits["busy"] == pytest.approx(1 / (2.0 * HEADROOM))
    assert min(waits, key=waits.__getitem__) == "free"


def test_in_flight_grows_with_latency() -> None:
    clock = FakeClock(100.0)
    pacers = [Pacer(2.0, clock=clock)]
    gate = InFlight(pacers, max_in_flight=256, clock=clock)
    gate.observe(0.05)
    fast = gate.limit()
    for _ in range(30):
        gate.observe(20.0)
    slow = gate.limit()
    assert fast <= 3
    assert slow >= 2.0 * HEADROOM * 19  # about rate x latency, with headroom
    assert InFlight(pacers, max_in_flight=16, clock=clock).limit() <= 16


async def test_in_flight_counts_a_slow_first_answer_before_it_arrives() -> None:
    clock = FakeClock(100.0)
    gate = InFlight([Pacer(2.0, clock=clock)], max_in_flight=256, clock=clock)
    before = gate.limit()
    async with gate.permit() as sent:
        sent()  # a request went out and has not come back
        clock.now += 30
        assert gate.limit() > 10 * before


def test_fixed_concurrency_overrides_the_controller() -> None:
    gate = InFlight([Pacer(2.0)], max_in_flight=256, fixed=8)
    gate.observe(100.0)
    assert gate.limit() == 8


async def test_permit_waits_while_the_limit_is_reached() -> None:
    gate = InFlight([Pacer(2.0)], max_in_flight=256, fixed=1)
    order: list[str] = []

    async def hold(name: str) -> None:
        async with gate.permit():
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    async with asyncio.TaskGroup() as group:
        group.create_task(hold("a"))
        group.create_task(hold("b"))
    assert order == ["a in", "a out", "b in", "b out"]


async def slot_times(pacer: Pacer, clock: FakeClock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        await pacer.slot()
        times.append(clock.now)
    return times


async def test_a_stated_limit_caps_a_rate_set_too_high() -> None:
    clock = FakeClock(100.0)
    pacer = Pacer(6.0, clock=clock, sleep=clock.sleep)  # the job file says 6 RPS by mistake

    pacer.answered(Quota(limit=120, remaining=119))  # the gateway says 120 a minute

    assert pacer.rate == pytest.approx(2.0 * HEADROOM)
    gaps = [b - a for a, b in itertools.pairwise(await slot_times(pacer, clock, 4))]
    assert gaps == pytest.approx([1 / (2.0 * HEADROOM)] * 3)


async def test_what_remains_of_a_window_is_spread_over_the_time_left() -> None:
    clock = FakeClock(100.0)
    pacer = Pacer(2.0, clock=clock, sleep=clock.sleep)

    pacer.answered(Quota(limit=120, remaining=10, reset_s=20.0))  # 0.5 requests/s left
    times = []
    for left in (9, 8, 7):
        await pacer.slot()
        times.append(clock.now)
        pacer.answered(Quota(limit=120, remaining=left, reset_s=120.0 - clock.now))

    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([2.0, 2.0], rel=0.05)
    assert pacer.rate == pytest.approx(2.0 * HEADROOM)  # the rate itself is not cut


async def test_a_spent_window_holds_the_model_until_it_resets() -> None:
    clock = FakeClock(100.0)
    pacer = Pacer(2.0, clock=clock, sleep=clock.sleep)
    pacer.answered(Quota(limit=120, remaining=0, reset_s=10.0))
    start = clock.now

    assert pacer.expected_wait() == pytest.approx(10.0)
    await pacer.slot()

    assert clock.now - start == pytest.approx(10.0)


async def test_a_window_429_holds_until_the_estimated_end_and_keeps_the_rate() -> None:
    clock = FakeClock(100.0)
    pacer = Pacer(2.0, clock=clock, sleep=clock.sleep)
    pacer.answered(Quota(limit=120, remaining=2))
    clock.now += 1.0
    pacer.answered(Quota(limit=120, remaining=119))  # a window started: it ends in 59 s
    clock.now += 44.0
    rate = pacer.rate

    pacer.throttled(window_reset=60.0)  # LiteLLM says 60: a whole window, not what is left
    start = clock.now
    await pacer.slot()

    assert clock.now - start == pytest.approx(15.0)
    assert pacer.rate == rate and pacer.decreases == 0


async def test_a_window_429_with_no_known_end_holds_for_a_probe_interval() -> None:
    clock = FakeClock(100.0)
    pacer = Pacer(2.0, clock=clock, sleep=clock.sleep)

    pacer.throttled(window_reset=60.0)
    start = clock.now
    await pacer.slot()

    assert clock.now - start == pytest.approx(PROBE_S)
    assert pacer.decreases == 0


def test_a_429_that_names_no_window_still_cuts_the_rate() -> None:
    clock = FakeClock(100.0)
    pacer = Pacer(2.0, clock=clock)

    pacer.throttled()

    assert pacer.rate == pytest.approx(2.0 * HEADROOM * DECREASE)
