"""What the emulator saw, per model: the counters behind ``GET /stats``.

Pacing is measured at the server: ``accepted`` requests passed the rate window (and count in
it), ``throttled`` ones got 429, ``rejected`` ones got 400 after being admitted (the service
counts bad requests against the limit too), ``faults`` were failed on purpose (500/503, drop,
cut, stall; by kind in ``fault_kinds``), ``spikes`` were delayed on purpose, and
``max_in_window`` is the most requests admitted in any one window (sliding, or one fixed
window of ``period_s`` seconds with ``EmulatorConfig.window_s``); ``first_admitted_at`` and
``last_admitted_at`` are the monotonic clock's time (system-wide on Linux) of the first and the
latest admission, so a benchmark computes the rate the server really admitted. The times of the
latest ``THROTTLE_TIMES`` 429s are kept too, and listed as ``throttled_at`` only when asked
(``GET /stats?times=1``), so the usual answer stays small. Shape of ``/stats``::

    {"models": {"bge-m3": {"rps": 7.0, "limit": 7, "period_s": 1.0, "accepted": 0,
                           "throttled": 0, "rejected": 0, "faults": 0, "spikes": 0,
                           "fault_kinds": {"error_500": 0, "error_503": 0, "drop": 0,
                                           "cut": 0, "stall": 0},
                           "max_in_window": 0, "first_admitted_at": null,
                           "last_admitted_at": null}, ...},
     "unauthorized": 0, "unknown_model": 0}
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from batchrun.emulator.faults import Fault, Verdict
from batchrun.emulator.limits import Window

JsonDict = dict[str, object]

THROTTLE_TIMES = 10_000
"""How many of the latest 429s' times each model keeps (monotonic clock)."""


def _no_faults() -> dict[str, int]:
    return {fault.value: 0 for fault in Fault}


def _no_times() -> deque[float]:
    return deque(maxlen=THROTTLE_TIMES)


@dataclass
class ModelCounters:
    """The rate window of one model and the counts of what happened to its requests."""

    rps: float
    window: Window
    accepted: int = 0
    throttled: int = 0
    rejected: int = 0
    spikes: int = 0
    fault_kinds: dict[str, int] = field(default_factory=_no_faults)
    throttled_at: deque[float] = field(default_factory=_no_times)

    def admit(self) -> float:
        """Pass one request through the window: 0.0 if admitted, else seconds to wait."""
        wait = self.window.admit()
        if wait:
            self.throttled += 1
            self.throttled_at.append(self.window.clock())
        else:
            self.accepted += 1
        return wait

    def record(self, verdict: Verdict) -> None:
        """Count the faults injected into one admitted request."""
        if verdict.fault is not None:
            self.fault_kinds[verdict.fault.value] += 1
        if verdict.spike_s:
            self.spikes += 1

    def as_json(self, times: bool = False) -> JsonDict:
        """This model's entry of ``/stats``; with ``times``, the latest 429s' times too."""
        entry: JsonDict = {
            "rps": self.rps,
            "limit": self.window.capacity,
            "period_s": self.window.period,
            "accepted": self.accepted,
            "throttled": self.throttled,
            "rejected": self.rejected,
            "faults": sum(self.fault_kinds.values()),
            "spikes": self.spikes,
            "fault_kinds": dict(self.fault_kinds),
            "max_in_window": self.window.peak,
            "first_admitted_at": self.window.first,
            "last_admitted_at": self.window.last,
        }
        if times:
            entry["throttled_at"] = list(self.throttled_at)
        return entry

    def reset(self) -> None:
        """Zero every counter and empty the window."""
        self.accepted = self.throttled = self.rejected = self.spikes = 0
        self.fault_kinds = _no_faults()
        self.throttled_at.clear()
        self.window.reset()


@dataclass
class Counters:
    """Every model's :class:`ModelCounters`, and the requests refused before a model was known."""

    models: dict[str, ModelCounters]
    unauthorized: int = 0
    unknown_model: int = 0

    def as_json(self, times: bool = False) -> JsonDict:
        """The body of ``GET /stats`` (``times``: with each model's ``throttled_at``)."""
        return {
            "models": {name: stats.as_json(times) for name, stats in self.models.items()},
            "unauthorized": self.unauthorized,
            "unknown_model": self.unknown_model,
        }

    def reset(self) -> None:
        """Zero everything (``POST /stats/reset``)."""
        self.unauthorized = self.unknown_model = 0
        for stats in self.models.values():
            stats.reset()
