"""backoff_delay: exponential backoff with full jitter, a pure function of the attempt."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from batchrun.errors import RetryableError, RowError
from batchrun.job.spec import RunSpec
from batchrun.send.retry import (
    Action,
    Decision,
    RetryPolicy,
    backoff_delay,
    decide,
)

POLICY = RetryPolicy.from_run(RunSpec())  # 8 attempts, 1 s base, 60 s cap, 5 s after a 5xx
SAMPLES = 400


def delays(
    attempt: int, policy: RetryPolicy = POLICY, error: RetryableError | None = None
) -> list[float]:
    rng = random.Random(attempt)
    return [backoff_delay(attempt, policy, rng, error) for _ in range(SAMPLES)]


@pytest.mark.parametrize(("attempt", "bound"), [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0)])
def test_full_jitter_bound_doubles_with_each_attempt(attempt: int, bound: float) -> None:
    waits = delays(attempt)

    assert all(0 <= wait <= bound for wait in waits)
    assert max(waits) > 0.9 * bound  # the whole range is used: full jitter
    assert min(waits) < 0.1 * bound


def test_full_jitter_bound_is_capped_at_max_delay() -> None:
    waits = delays(20)

    assert all(0 <= wait <= POLICY.max_delay for wait in waits)
    assert max(waits) > 0.9 * POLICY.max_delay


def test_retry_after_is_honoured_exactly() -> None:
    throttled = RetryableError("429", status=429, retry_after=7.5)

    assert backoff_delay(1, POLICY, random.Random(0), throttled) == 7.5
    assert backoff_delay(6, POLICY, random.Random(0), throttled) == 7.5


def test_retry_after_is_believed_up_to_backoff_max_s() -> None:
    rng, patient = random.Random(0), replace(POLICY, max_delay=900.0)

    assert backoff_delay(1, POLICY, rng, RetryableError("429", 429, retry_after=3600)) == 60.0
    assert backoff_delay(1, patient, rng, RetryableError("429", 429, retry_after=3600)) == 900.0
    assert backoff_delay(1, patient, rng, RetryableError("429", 429, retry_after=700)) == 700.0


@pytest.mark.parametrize("seconds", [0.0, -2.0])
def test_retry_after_zero_or_negative_means_retry_now(seconds: float) -> None:
    assert backoff_delay(3, POLICY, random.Random(0), RetryableError("429", 429, seconds)) == 0.0


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_wait_at_least_server_error_delay(status: int) -> None:
    waits = delays(1, error=RetryableError(str(status), status=status))

    assert all(POLICY.server_error_delay <= wait <= POLICY.max_delay for wait in waits)


@pytest.mark.parametrize("status", [None, 408, 429, 504])
def test_other_retryable_errors_use_plain_backoff(status: int | None) -> None:
    waits = delays(1, error=RetryableError("x", status=status))

    assert all(0 <= wait <= POLICY.base_delay for wait in waits)


def test_server_error_after_many_attempts_keeps_the_longer_backoff() -> None:
    waits = delays(7, error=RetryableError("503", status=503))

    assert all(POLICY.server_error_delay <= wait <= POLICY.max_delay for wait in waits)
    assert max(waits) > 0.9 * POLICY.max_delay


def test_server_error_delay_never_exceeds_max_delay() -> None:
    policy = replace(POLICY, base_delay=1.0, max_delay=6.0, server_error_delay=5.0)

    waits = delays(1, policy, RetryableError("503", status=503))

    assert all(wait <= policy.max_delay for wait in waits)


def test_backoff_is_pure_same_seed_same_delays() -> None:
    server = RetryableError("502", status=502)

    def run(seed: int) -> list[float]:
        rng = random.Random(seed)
        return [backoff_delay(a, POLICY, rng, server if a % 2 else None) for a in range(1, 9)]

    assert run(42) == run(42)
    assert run(42) != run(43)


def test_zero_base_delay_retries_at_once() -> None:
    policy = replace(POLICY, base_delay=0.0, max_delay=0.0, server_error_delay=0.0)

    assert delays(3, policy, RetryableError("503", status=503)) == [0.0] * SAMPLES


def test_policy_takes_the_job_files_run_settings() -> None:
    run = RunSpec(max_attempts=3, backoff_base_s=0.5, backoff_max_s=9, fallback_after=2)

    policy = RetryPolicy.from_run(run)

    assert (policy.max_attempts, policy.base_delay, policy.max_delay) == (3, 0.5, 9)
    assert (policy.server_error_delay, policy.fallback_after) == (5.0, 2)


def test_decide_retries_a_retryable_error_after_the_backoff_delay() -> None:
    error = RetryableError("429", status=429, retry_after=2.0)

    decision = decide(error, 1, 1, POLICY, random.Random(0), splittable=False)

    assert decision == Decision(Action.RETRY, delay=2.0, fallback=False)


def test_decide_gives_up_when_the_attempts_run_out() -> None:
    error = RetryableError("503 from x", status=503)

    decision = decide(error, POLICY.max_attempts, 0, POLICY, random.Random(0), splittable=False)

    assert decision.action is Action.GIVE_UP
    assert decision.reason == f"gave up after {POLICY.max_attempts} attempts: 503 from x"


def test_decide_falls_back_once_the_streak_reaches_fallback_after() -> None:
    error = RetryableError("503", status=503)
    rng = random.Random(0)

    early = decide(error, 2, POLICY.fallback_after - 1, POLICY, rng, splittable=False)
    due = decide(error, 3, POLICY.fallback_after, POLICY, rng, splittable=False)

    assert (early.fallback, due.fallback) == (False, True)


@pytest.mark.parametrize(("splittable", "action"), [(True, Action.SPLIT), (False, Action.GIVE_UP)])
def test_decide_splits_a_rejected_request_that_can_be_split(
    splittable: bool, action: Action
) -> None:
    error = RowError("400 bad request: input[3] is empty", status=400)

    decision = decide(error, 1, 0, POLICY, random.Random(0), splittable=splittable)

    assert decision.action is action
    assert decision.reason == ("" if splittable else "400 bad request: input[3] is empty")
