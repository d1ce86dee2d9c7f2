"""Reading the limits a service states: quota headers on answers, 429 headers and bodies, and
the window budget that spreads what is left over the time left."""

from __future__ import annotations

import math

import pytest

from batchrun.service.ratelimits import (
    WINDOW_S,
    Quota,
    Throttle,
    WindowBudget,
    read_quota,
    read_throttle,
)

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


def test_no_quota_headers_is_no_quota() -> None:
    assert read_quota({"content-type": "application/json"}) is None


def test_openai_style_quota_with_a_duration_reset() -> None:
    headers = {
        "x-ratelimit-limit-requests": "120",
        "x-ratelimit-remaining-requests": "87",
        "x-ratelimit-reset-requests": "6m0.5s",
    }
    assert read_quota(headers) == Quota(120, 87, 360.5)


@pytest.mark.parametrize(
    ("text", "seconds"), [("1s", 1.0), ("250ms", 0.25), ("1m30s", 90.0), ("12", 12.0)]
)
def test_reset_durations(text: str, seconds: float) -> None:
    quota = read_quota({"x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": text})
    assert quota is not None and quota.reset_s == pytest.approx(seconds)


def test_the_litellm_variant_with_the_fewest_requests_left_binds() -> None:
    headers = {
        "X-RateLimit-Limit-Requests": "420",
        "X-RateLimit-Remaining-Requests": "400",
        "x-ratelimit-model_per_team-limit-requests": "120",
        "x-ratelimit-model_per_team-remaining-requests": "7",
        "x-ratelimit-model_per_key-remaining-tokens": "5",  # tokens: not a request budget
    }
    assert read_quota(headers) == Quota(120, 7, None)


def test_a_plain_retry_after_is_not_a_window() -> None:
    assert read_throttle({"Retry-After": "2"}, None, NOW) == Throttle(2.0, None)
    assert read_throttle({"retry-after-ms": "1500"}, None, NOW) == Throttle(1.5, None)


def test_retry_after_as_an_http_date() -> None:
    throttle = read_throttle({"Retry-After": "Fri, 15 Jan 2027 08:00:30 GMT"}, None, NOW)
    assert throttle.retry_after == pytest.approx(30.0)


def test_litellm_deployment_limit_names_a_window() -> None:
    throttle = read_throttle({"llm_provider-retry-after": "60"}, {"error": {}}, NOW)
    assert throttle == Throttle(None, 60.0)


def test_litellm_team_limit_names_a_window_by_its_reset_at() -> None:
    body = {
        "error": {
            "message": "Rate limit exceeded for team: t1. Limit type: requests. Current limit: "
            "120, Remaining: 0. Limit resets at: 2027-01-15 08:00:45 UTC",
            "type": "throttling_error",
        }
    }
    throttle = read_throttle({"retry-after": "60"}, body, NOW)
    assert throttle.window_reset == pytest.approx(45.0)
    header = read_throttle({"reset_at": "2027-01-15 08:00:20 UTC"}, None, NOW)
    assert header.window_reset == pytest.approx(20.0)


def test_a_429_saying_nothing_remains_names_a_window() -> None:
    throttle = read_throttle({"x-ratelimit-remaining-requests": "0"}, None, NOW)
    assert throttle == Throttle(None, WINDOW_S)


def seen_start(budget: WindowBudget, at: float) -> None:
    """Answers before and at ``at`` that show a window reset between them."""
    budget.observe(Quota(120, 2, None), now=at - 1.0)
    budget.observe(Quota(120, 119, None), now=at)


def test_the_budget_is_what_remains_over_the_time_left() -> None:
    budget = WindowBudget()
    assert budget.rate(0.0) == math.inf  # nothing known

    seen_start(budget, 1.0)  # the window started after 0.0: it ends at 60.0 at the soonest
    budget.observe(Quota(120, 60, None), now=40.0)

    assert budget.rate(40.0) == pytest.approx(60 / 20)
    assert budget.reset_in(40.0) == pytest.approx(20.0)


def test_a_first_answer_does_not_tell_when_its_window_ends() -> None:
    budget = WindowBudget()
    budget.observe(Quota(120, 3, None), now=0.0)  # the minute may end in 1 s or in 59 s

    assert budget.rate(0.0) == math.inf
    assert budget.reset_in(0.0) is None


def test_a_jump_in_what_remains_starts_a_new_window() -> None:
    budget = WindowBudget()
    budget.observe(Quota(120, 3, None), now=0.0)
    budget.observe(Quota(120, 2, None), now=10.0)
    budget.observe(Quota(120, 4, None), now=11.0)  # an older answer, out of order: same window
    assert budget.reset_in(11.0) is None

    assert budget.observe(Quota(120, 118, None), now=12.0)  # the window reset after 11.0
    assert budget.reset_in(12.0) == pytest.approx(WINDOW_S - 1.0)


def test_a_reset_too_small_to_see_leaves_the_end_unknown_after_the_estimate() -> None:
    budget = WindowBudget()
    seen_start(budget, 1.0)
    budget.observe(Quota(120, 110, None), now=58.0)  # (a minute reset at 3.0 showed +5)
    budget.observe(Quota(120, 7, None), now=61.5)  # past the latest end: no new window seen

    assert budget.rate(61.5) == math.inf  # 7 left is not spread over a whole new minute
    assert budget.reset_in(61.5) is None


def test_a_stated_reset_is_not_trusted_past_the_estimated_end() -> None:
    budget = WindowBudget()
    seen_start(budget, 1.0)
    budget.observe(Quota(120, 0, 60.0), now=50.0)  # LiteLLM's team limiter: a whole window

    assert budget.reset_in(50.0) == pytest.approx(10.0)
    budget.observe(Quota(120, 0, 3.0), now=51.0)  # a nearer stated reset is believed
    assert budget.reset_in(51.0) == pytest.approx(3.0)


def test_a_stated_reset_with_no_window_seen_is_at_most_a_window_away() -> None:
    budget = WindowBudget()
    budget.observe(Quota(120, 0, 15.0), now=100.0)
    assert budget.reset_in(100.0) == pytest.approx(15.0)
    budget.observe(Quota(120, 0, 3600.0), now=101.0)
    assert budget.reset_in(101.0) == pytest.approx(WINDOW_S)


def test_a_spent_budget_is_zero_until_the_window_ends() -> None:
    budget = WindowBudget()
    budget.observe(Quota(120, 0, 15.0), now=100.0)

    assert budget.rate(105.0) == 0.0
    assert budget.reset_in(105.0) == pytest.approx(10.0)
    assert budget.rate(115.0) == math.inf


def test_a_short_gateway_retry_after_is_an_upstream_429_renamed_not_a_window() -> None:
    headers = {"llm_provider-retry-after": "1", "llm_provider-retry-after-ms": "999"}
    assert read_throttle(headers, None, NOW) == Throttle(0.999, None)


def test_header_values_that_are_not_finite_numbers_are_ignored() -> None:
    assert read_throttle({"Retry-After": "nan"}, None, NOW) == Throttle(None, None)
    assert read_throttle({"retry-after-ms": "inf"}, None, NOW) == Throttle(None, None)
    assert read_quota({"x-ratelimit-remaining-requests": "inf"}) is None


def test_the_smallest_limit_and_the_fewest_left_bind_and_negative_counts_are_zero() -> None:
    headers = {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "-10",  # LiteLLM not enforcing: it went below 0
        "x-ratelimit-api_key-limit-requests": "120",
        "x-ratelimit-api_key-remaining-requests": "100",
    }
    assert read_quota(headers) == Quota(120, 0, None)


def test_a_late_answer_does_not_raise_what_remains_in_the_window() -> None:
    budget = WindowBudget()
    seen_start(budget, 1.0)
    budget.observe(Quota(120, 40, None), now=5.0)
    budget.observe(Quota(120, 43, None), now=6.0)  # sent earlier, answered later

    assert budget.rate(6.0) == pytest.approx(40 / 54)
