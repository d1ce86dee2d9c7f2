"""Counters of a run, kept by the workers and the writer, read by the progress bar and the
final summary (printed, and saved as ``_summary.json`` beside the parts)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from batchrun.errors import RetryableError
from batchrun.service.statuses import THROTTLED

RATE_SPAN_S = 1.0
"""The shortest time between a model's first and last request that its rate is said over."""


@dataclass
class ModelStats:
    """What one model did in this run."""

    requests: int = 0
    answered: int = 0
    throttled: int = 0
    retries: int = 0
    reasks: int = 0
    """Answers not valid against the job's schema, asked again."""
    errors: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rate: float | None = None
    """The pacing rate (requests/s) the model settled on."""
    first_sent: float | None = None
    last_sent: float | None = None
    """When the first and the last request were sent (monotonic seconds)."""

    def sent(self, at: float) -> None:
        """Count a request sent at ``at``."""
        self.requests += 1
        self.first_sent = at if self.first_sent is None else self.first_sent
        self.last_sent = at

    @property
    def sent_rate(self) -> float | None:
        """Requests per second while sending, on average: the gaps between the first request
        and the last over the time between them, as a limit counts them (``requests`` over
        the wall time read 7.4/s for 6 requests paced at 6.9/s). None when they were sent
        within ``RATE_SPAN_S``: a burst's rate says nothing of a limit."""
        if self.first_sent is None or self.last_sent is None:
            return None
        span = self.last_sent - self.first_sent
        return (self.requests - 1) / span if span >= RATE_SPAN_S else None


@dataclass
class RunStats:
    """Counters of one run."""

    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    rows_ok: int = 0
    rows_failed: int = 0
    rows_skipped: int = 0
    models: dict[str, ModelStats] = field(default_factory=dict)
    saved_by_dedup: int = 0
    in_flight: int = 0
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    """``[pricing]``: per model, the cost of a million tokens in and out."""
    eta_history: list[tuple[float, int, float | None]] = field(default_factory=list)
    """``(seconds since the start, rows done, ETA in seconds)``, every half minute."""
    notice: str | None = None
    """Something the user should see now, e.g. that the shared limiter is unreachable."""

    def cost(self, name: str) -> float | None:
        """What ``name``'s tokens of this run cost, by ``[pricing]`` (None: not priced)."""
        if name not in self.prices:
            return None
        m, (per_in, per_out) = self.model(name), self.prices[name]
        return (m.prompt_tokens * per_in + m.completion_tokens * per_out) / 1e6

    def model(self, name: str) -> ModelStats:
        return self.models.setdefault(name, ModelStats())

    def retryable(self, name: str, error: RetryableError) -> None:
        stats = self.model(name)
        stats.throttled += error.status == THROTTLED
        stats.errors[str(error.status or type(error).__name__)] += 1

    @property
    def throttled(self) -> int:
        return sum(m.throttled for m in self.models.values())

    @property
    def wall_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_ok": self.rows_ok,
            "rows_failed": self.rows_failed,
            "rows_skipped_done": self.rows_skipped,
            "rows_deduplicated": self.saved_by_dedup,
            "wall_s": round(self.wall_s, 3),
            "models": {
                name: {
                    "requests": m.requests,
                    "answered": m.answered,
                    "requests_per_s": round(m.sent_rate, 3) if m.sent_rate else None,
                    "paced_rps": round(m.rate, 3) if m.rate is not None else None,
                    "throttled_429": m.throttled,
                    "retries": m.retries,
                    "reasks": m.reasks,
                    "errors": dict(m.errors),
                    "prompt_tokens": m.prompt_tokens,
                    "completion_tokens": m.completion_tokens,
                    "cost": self.cost(name),
                }
                for name, m in self.models.items()
            },
            "eta_history": self.eta_history,
        }

    def lines(self) -> list[str]:
        """The summary as a few human lines."""
        out = [
            f"rows: {self.rows_ok} ok, {self.rows_failed} failed, "
            f"{self.rows_skipped} already done; wall {self.wall_s:.1f} s"
        ]
        if self.saved_by_dedup:
            out.append(f"{self.saved_by_dedup} rows repeated an earlier text and cost no request")
        for name, m in self.models.items():
            errors = ", ".join(f"{k}: {v}" for k, v in sorted(m.errors.items())) or "none"
            paced = f"paced at {m.rate:.2f}/s" if m.rate is not None else "not paced"
            reasks = f", {m.reasks} re-asks" if m.reasks else ""
            cost = self.cost(name)
            priced = f", cost {cost:.4f}" if cost is not None else ""
            sending = f"{m.sent_rate:.2f}/s, " if m.sent_rate else ""
            out.append(
                f"{name}: {m.requests} request{'s' * (m.requests != 1)} ({sending}{paced}), "
                f"{m.throttled} throttled (429), {m.retries} retries{reasks}, errors {errors}, "
                f"tokens {m.prompt_tokens} in / {m.completion_tokens} out{priced}"
            )
        return out
