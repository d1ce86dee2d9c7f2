"""Per-model pacing: requests leave one every 1/rate seconds, never in bursts.

The service counts requests in a sliding 1-second window, so a 2 RPS model must see one request
every 0.5 s, not two at once. ``aiolimiter.AsyncLimiter(1, 1 / rate)`` is a leaky bucket of
capacity 1: no burst, and no catch-up after a late timer (``AsyncLimiter(2, 1)`` was measured to
admit 3 requests in one 1-second window). We pace a little under the limit (``HEADROOM``) so
timer jitter never puts one request too many in a window.
"""

from __future__ import annotations

from aiolimiter import AsyncLimiter

HEADROOM = 0.97


class Pacer:
    """Hands out send slots for one model, evenly spaced. Create inside the running loop."""

    def __init__(self, rps: float, headroom: float = HEADROOM) -> None:
        if rps <= 0:
            raise ValueError(f"a model's rate must be positive, got {rps}")
        self.rps = rps * headroom
        self._limiter = AsyncLimiter(1, 1 / self.rps)

    async def slot(self) -> None:
        """Wait for this model's next send slot."""
        await self._limiter.acquire()
