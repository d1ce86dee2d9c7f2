"""The progress bar's news: a wait the service asked for is said once, with why and until when."""

from __future__ import annotations

import io
import time

from batchrun.send.progress import Progress
from batchrun.send.stats import RunStats
from tests.support import FakeClock

NOW = 1_800_000_000.0


def at(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(seconds))


def test_a_long_wait_is_said_once_per_model_with_why_and_until_when() -> None:
    clock, stats, lines = FakeClock(NOW), RunStats(), io.StringIO()
    progress = Progress(stats, lines, enabled=False, clock=clock)

    progress.waiting("bge-m3", 3600, 60)
    clock.now += 0.5
    progress.waiting("bge-m3", 3600, 60)  # another request of the same moment: not said again
    progress.waiting("bge-m3", 1, 1)  # a short wait: the bar does not look stuck
    progress.waiting("qwen3-32b-awq", 20, 20)

    assert lines.getvalue().splitlines() == [
        f"bge-m3: waiting 60 s, until {at(NOW + 60)}: the service asked for 3600 s "
        "(Retry-After); [run].backoff_max_s = 60 caps it",
        f"qwen3-32b-awq: waiting 20 s, until {at(NOW + 20.5)}: the service asked for 20 s "
        "(Retry-After)",
    ]
    assert stats.notice == (
        f"qwen3-32b-awq waits until {at(NOW + 20.5)}: the service asked for 20 s (Retry-After)"
    )


def test_the_wait_is_said_again_when_it_ends_later_and_cleared_when_over() -> None:
    clock, stats, lines = FakeClock(NOW), RunStats(), io.StringIO()
    progress = Progress(stats, lines, clock=clock)
    progress.start(10)

    progress.waiting("bge-m3", 60, 60)
    clock.now += 30
    progress.waiting("bge-m3", 60, 60)  # the next window's answer: 30 s later than the first

    assert len(lines.getvalue().splitlines()) >= 2
    assert f"until {at(NOW + 90)}" in (stats.notice or "")
    clock.now += 61
    progress.advance(1)
    progress.close()
    assert stats.notice is None


def test_the_summary_states_the_rate_requests_were_sent_at_not_over_the_wall() -> None:
    stats = RunStats(started=0.0, finished=2.5)
    model = stats.model("bge-m3")
    for number in range(15):  # paced at 7 RPS: 15 requests over 2 s, the run 2.5 s
        model.sent(0.1 + number / 7)
    burst = stats.model("qwen3-coder-30b-a3b-instruct-fp8")
    for number in range(8):  # not paced: 8 requests within 4 ms say nothing of a rate
        burst.sent(0.1 + number / 2000)
    alone = stats.model("qwen3-32b-awq")
    alone.sent(0.1)
    lines = stats.lines()
    assert "bge-m3: 15 requests (7.00/s, not paced)" in lines[1]
    assert "qwen3-coder-30b-a3b-instruct-fp8: 8 requests (not paced)" in lines[2]
    assert "qwen3-32b-awq: 1 request (not paced)" in lines[3]
    assert stats.as_dict()["models"]["bge-m3"]["requests_per_s"] == 7.0
