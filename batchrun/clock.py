"""Time as the code takes it: injected, so tests move it by hand instead of waiting.

``Clock`` reads the time (``time.monotonic`` for intervals, ``time.time`` for the wall
clock); ``Sleep`` waits (``asyncio.sleep``). The runner's pacers and the emulator's rate
windows both take them.
"""

from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
