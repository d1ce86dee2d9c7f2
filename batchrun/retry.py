"""When to try a failed request again: ``backoff_delay()``, a pure function of the attempt.

Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And Jitter"):
the n-th retry waits a uniform random time in ``[0, min(max_delay, base * 2**n)]``, so many
workers that failed together do not come back together. A server that says when to come back
(``Retry-After``) is believed, up to ten minutes. The SciBox guide asks to wait 5–15 s after a
500/502/503, so server errors wait at least ``server_error_delay``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from batchrun.errors import RetryableError

SERVER_ERRORS = frozenset({500, 502, 503})
RETRY_AFTER_MAX = 600.0
"""The longest ``Retry-After`` believed: a server asking for hours is misconfigured."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a request is tried."""

    max_attempts: int = 8
    base_delay: float = 1.0
    max_delay: float = 60.0
    server_error_delay: float = 5.0


def backoff_delay(
    attempt: int,
    policy: RetryPolicy,
    rng: random.Random,
    error: RetryableError | None = None,
) -> float:
    """Seconds to wait before try number ``attempt + 1`` after ``error`` ended try ``attempt``."""
    if error is not None and error.retry_after is not None:
        return min(max(error.retry_after, 0.0), RETRY_AFTER_MAX)
    delay = rng.uniform(0, min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1)))
    if error is not None and error.status in SERVER_ERRORS:
        floor = min(policy.server_error_delay, policy.max_delay)
        if delay < floor:
            delay = min(floor + rng.uniform(0, floor), policy.max_delay)
    return delay
