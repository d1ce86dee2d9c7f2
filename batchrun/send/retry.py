"""What to do after a failed attempt: ``decide()``, a pure function of the attempt and the error.

The decision is one of: give up (the rows are written as failed with the reason), split (a
rejected packed request is sent again in halves), or retry after a delay, on the fallback model
when the row's own model has failed it ``fallback_after`` times in a row with statuses that
fall back (``statuses.FALLS_BACK``).

The delay (``backoff_delay``) is exponential backoff with full jitter (AWS architecture blog,
"Exponential Backoff And Jitter"): the n-th retry waits a uniform random time in
``[0, min(max_delay, base * 2**n)]``, so many workers that failed together do not come back
together. A server that says when to come back (``Retry-After``) is believed, up to
``[run].backoff_max_s`` (a server asking for an hour gets the job's longest wait, and the bar
says so). The SciBox guide asks to wait 5–15 s after a 500/502/503, so those wait at least
``server_error_delay``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from batchrun.errors import RetryableError, RowError
from batchrun.job.spec import RunSpec
from batchrun.service.statuses import server_busy


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a request is tried; built from the job's ``[run]``."""

    max_attempts: int
    base_delay: float
    max_delay: float
    server_error_delay: float
    fallback_after: int

    @classmethod
    def from_run(cls, run: RunSpec) -> RetryPolicy:
        return cls(
            max_attempts=run.max_attempts,
            base_delay=run.backoff_base_s,
            max_delay=run.backoff_max_s,
            server_error_delay=run.server_error_wait_s,
            fallback_after=run.fallback_after,
        )


class Action(Enum):
    GIVE_UP = "give up"
    SPLIT = "split"
    RETRY = "retry"


@dataclass(frozen=True)
class Decision:
    """What follows a failed attempt: ``reason`` for giving up, ``delay`` and ``fallback``
    for a retry."""

    action: Action
    reason: str = ""
    delay: float = 0.0
    fallback: bool = False


def decide(
    error: RetryableError | RowError,
    attempts: int,
    streak: int,
    policy: RetryPolicy,
    rng: random.Random,
    *,
    splittable: bool,
) -> Decision:
    """After try number ``attempts`` ended in ``error``; ``streak`` counts the failures in a
    row that fall back, this one included."""
    if isinstance(error, RowError):
        return Decision(Action.SPLIT) if splittable else Decision(Action.GIVE_UP, str(error))
    if attempts >= policy.max_attempts:
        return Decision(Action.GIVE_UP, f"gave up after {attempts} attempts: {error}")
    delay = backoff_delay(attempts, policy, rng, error)
    return Decision(Action.RETRY, delay=delay, fallback=streak >= policy.fallback_after)


def backoff_delay(
    attempt: int,
    policy: RetryPolicy,
    rng: random.Random,
    error: RetryableError | None = None,
) -> float:
    """Seconds to wait before try number ``attempt + 1`` after ``error`` ended try ``attempt``."""
    if error is not None and error.retry_after is not None:
        return min(max(error.retry_after, 0.0), policy.max_delay)
    delay = rng.uniform(0, min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1)))
    if error is not None and server_busy(error):
        floor = min(policy.server_error_delay, policy.max_delay)
        if delay < floor:
            delay = min(floor + rng.uniform(0, floor), policy.max_delay)
    return delay
