"""An asyncio event loop on virtual time: when every task waits, the clock jumps to the next
timer instead of sleeping, so a run of minutes takes milliseconds and always the same course.

``loop.time()`` is the virtual clock and ``asyncio.sleep`` waits on it; code under test gets
``loop.time`` as its clock and ``asyncio.sleep`` as its sleep. Only in-memory waiting is
allowed: a task that waits for a socket or a thread would see time race ahead, so the loop
refuses to wait without a timer (nothing could ever wake it: a deadlock in the test).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """Polls without blocking; a wait with nothing ready moves the loop's clock instead."""

    def __init__(self, clock: VirtualTimeLoop) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if not ready and timeout is None:
            raise RuntimeError("every task waits and no timer is set: a deadlock")
        if not ready and timeout:
            self._clock.advance(timeout)
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` starts at ``start`` and moves only by jumps."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end on a fresh virtual-time loop."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)
