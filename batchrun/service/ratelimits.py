"""What the service says of its limits, read from its headers and 429 bodies, and the budget of
the current window that follows from it.

Read on every answer (``Quota``): ``x-ratelimit-limit-requests``,
``x-ratelimit-remaining-requests`` and ``x-ratelimit-reset-requests`` (OpenAI's durations:
``1s``, ``6m0s``, ``250ms``), and LiteLLM's per-key / per-team variants
(``x-ratelimit-model_per_key-remaining-requests``, ...): the one with the fewest requests left
binds. Request limits are per minute (OpenAI's RPM, LiteLLM's ``rpm``) unless a reset says when
the window ends.

Read on a 429 (``Throttle``): ``retry-after-ms`` and ``Retry-After`` (seconds or an HTTP
date), LiteLLM's ``llm_provider-retry-after(-ms)`` (its deployment limit, and an upstream 429
renamed), a ``reset_at`` header or body field (its team limiter), and the reset headers above.
A 429 that carries any of LiteLLM's or the reset fields, or says 0 requests remain, *names a
window*: the window ran out, which is not a sign of sending too fast.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

WINDOW_S = 60.0
"""The window of a stated request limit when no reset says otherwise: a minute (RPM)."""
WINDOW_MIN_S = 10.0
"""A gateway's retry-after this long or longer means a window ran out."""
_QUOTA_HEADER = re.compile(r"x-ratelimit-(?:(.+)-)?(limit|remaining|reset)-requests")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RESET_AT = re.compile(r"(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?)\s*(?:UTC|Z)?")


@dataclass(frozen=True, slots=True)
class Quota:
    """A model's request budget as one answer stated it."""

    limit: int | None = None
    remaining: int | None = None
    reset_s: float | None = None
    """Seconds until the window resets, when the service says."""


@dataclass(frozen=True, slots=True)
class Throttle:
    """What a 429 says: when to come back, and whether a window ran out."""

    retry_after: float | None
    """How long this request waits before it is tried again (None: its backoff)."""
    window_reset: float | None
    """Seconds until the window that ran out resets (None: not a window 429)."""


def read_quota(headers: Mapping[str, str]) -> Quota | None:
    """The request budget the ``x-ratelimit-*-requests`` headers state, if any: the smallest
    limit, and the fewest requests left (with that group's reset). A negative count (LiteLLM
    lets it go below zero when it does not enforce) is 0."""
    found: dict[str, dict[str, str]] = {}
    for name, value in headers.items():
        if match := _QUOTA_HEADER.fullmatch(name.lower()):
            found.setdefault(match[1] or "", {})[match[2]] = value
    quotas = [_quota(fields) for fields in found.values()]
    limits = [q.limit for q in quotas if q.limit is not None]
    left = [q for q in quotas if q.remaining is not None]
    if not limits and not left:
        return None
    binding = min(left, key=lambda q: q.remaining or 0) if left else Quota()
    return Quota(min(limits, default=None), binding.remaining, binding.reset_s)


def _quota(fields: dict[str, str]) -> Quota:
    remaining = _int(fields.get("remaining"))
    left = max(remaining, 0) if remaining is not None else None
    return Quota(_int(fields.get("limit")), left, _duration(fields.get("reset")))


def read_throttle(headers: Mapping[str, str], body: Any, now: float | None = None) -> Throttle:
    """When a 429 asks us back, and whether it names a window reset. LiteLLM's
    ``llm_provider-retry-after`` names a window only when it is long (its own per-minute
    limit says 60); a short one is an upstream 429 it renamed: a plain 429."""
    now = time.time() if now is None else now
    headers = {name.lower(): value for name, value in headers.items()}
    plain = _first(
        _seconds(headers.get("retry-after-ms"), 0.001),
        _http_seconds(headers.get("retry-after"), now),
    )
    gateway = _first(
        _seconds(headers.get("llm_provider-retry-after-ms"), 0.001),
        _seconds(headers.get("llm_provider-retry-after"), 1.0),
    )
    if gateway is not None and gateway < WINDOW_MIN_S:
        plain, gateway = _first(plain, gateway), None
    reset_at = _reset_at(headers.get("reset_at") or _body_reset(body), now)
    quota = read_quota(headers)
    stated = quota.reset_s if quota else None
    resets = [t for t in (reset_at, gateway, stated) if t is not None]
    if not resets and not (quota is not None and quota.remaining == 0):
        return Throttle(plain, None)
    window = min(resets) if resets else (plain if plain is not None else WINDOW_S)
    return Throttle(None, window)  # the model's pacer holds; the request need not wait more


def _first(*values: float | None) -> float | None:
    return next((value for value in values if value is not None), None)


def _int(value: str | None) -> int | None:
    number = _finite(value)
    return int(number) if number is not None else None


def _finite(value: str | None) -> float | None:
    """A finite number, or None (``inf``, ``nan`` and text are not)."""
    try:
        number = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _seconds(value: str | None, unit: float) -> float | None:
    number = _finite(value)
    return max(number * unit, 0.0) if number is not None else None


def _http_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After``: seconds, or an HTTP date."""
    if value is None:
        return None
    if (seconds := _seconds(value, 1.0)) is not None:
        return seconds
    try:
        return max(email.utils.parsedate_to_datetime(value).timestamp() - now, 0.0)
    except (TypeError, ValueError):
        return None


def _duration(value: str | None) -> float | None:
    """OpenAI's reset durations (``6m0s``, ``1.5s``, ``250ms``) or plain seconds."""
    if value is None:
        return None
    if (seconds := _seconds(value, 1.0)) is not None:
        return seconds
    parts = _DURATION_PART.findall(value.strip())
    if not parts or "".join(amount + unit for amount, unit in parts) != value.strip():
        return None
    return sum(float(amount) * _UNIT_S[unit] for amount, unit in parts)


def _body_reset(body: Any) -> str | None:
    """LiteLLM's team limiter: ``reset_at`` in the error, or "Limit resets at: …" in its text."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        if isinstance(reset := error.get("reset_at"), str):
            return reset
        body = error.get("message")
    if isinstance(body, dict) and isinstance(reset := body.get("reset_at"), str):
        return reset
    text = str(body) if body is not None else ""
    match = re.search(r"resets? at:?\s*(" + _RESET_AT.pattern + ")", text, re.IGNORECASE)
    return match[1] if match else None


def _reset_at(value: str | None, now: float) -> float | None:
    """Seconds until a ``2026-11-25 14:31:00 UTC`` (or ISO 8601) time."""
    if value is None or not (match := _RESET_AT.search(value)):
        return None
    try:
        when = datetime.fromisoformat(match[1].replace(" ", "T")).replace(tzinfo=UTC)
    except ValueError:
        return None
    return max(when.timestamp() - now, 0.0)


class WindowBudget:
    """The requests left in a model's current window, spread over the time left in it.

    Each answer's ``Quota`` tells how many requests remain. A window's end is known only once
    its start was seen: the remaining count jumped up (a reset) between two answers, so the
    window started after the earlier one and ends at the soonest ``window_s`` after it (a
    hold until then never outlasts the window), and at the latest ``window_s`` after the
    answer that showed the jump. A reset the service states (``reset_s``) can bring the end
    nearer, never later than that estimate, nor more than ``window_s`` away: LiteLLM's team
    limiter always says a whole window from now. Before a start is seen (the first answers of
    a run), or once a window has outlived its latest end with no reset seen (a reset too small
    to see, early in a window), the end is unknown and nothing is spread or held on it: a
    count read in one window must never pace the next one.

    ``rate()`` is the remaining requests over the seconds left, so processes sharing one key
    slow down together as their common budget runs low, instead of exhausting it early and
    waiting out the rest of the window; with 0 left it is 0 until the window ends.
    """

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self._window_s = window_s
        self._soonest: float | None = None
        """The soonest the current window can end: ``window_s`` after the answer before its
        start was seen; None while unknown."""
        self._latest: float | None = None
        """The latest it can end: ``window_s`` after the answer that showed its start."""
        self._end: float | None = None
        self._remaining: int | None = None
        self._seen_at: float | None = None

    def observe(self, quota: Quota, now: float) -> bool:
        """Take in one answer's quota; whether it showed a new window start."""
        if quota.remaining is None:
            return False
        started = self._remaining is not None and self._reset(quota)
        if started:
            assert self._seen_at is not None
            self._soonest, self._latest = self._seen_at + self._window_s, now + self._window_s
        elif self._latest is not None and now >= self._latest:
            self._soonest = self._latest = None  # outlived: its start was not seen
        if self._remaining is None or started or self._latest is None:
            self._remaining = quota.remaining
        else:
            self._remaining = min(self._remaining, quota.remaining)  # late answers say more
        self._seen_at = now
        self._end = self._soonest
        if quota.reset_s is not None:
            stated = now + min(quota.reset_s, self._window_s)
            self._end = min(stated, self._soonest) if self._soonest is not None else stated
        return started

    def latest_end_in(self, now: float) -> float | None:
        """Seconds until the current window has surely ended, when its start was seen."""
        return self._latest - now if self._latest is not None and now < self._latest else None

    def _reset(self, quota: Quota) -> bool:
        """Whether ``quota`` shows a new window: more left than the window had (a jump bigger
        than answers arriving a little out of order explain)."""
        assert quota.remaining is not None and self._remaining is not None
        jump = max(4, (quota.limit or 0) // 10)
        return quota.remaining > self._remaining + jump

    def rate(self, now: float) -> float:
        """Requests per second the window still allows; inf when its end is not known."""
        if self._end is None or self._remaining is None or now >= self._end:
            return math.inf
        return self._remaining / (self._end - now)

    def reset_in(self, now: float) -> float | None:
        """Seconds until the current window ends, when known."""
        return self._end - now if self._end is not None and now < self._end else None
