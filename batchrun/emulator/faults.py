"""Which fault, if any, an admitted request gets: one seeded draw per request.

One uniform draw ``u`` picks at most one failing fault by stacking the shares on [0, 1)::

    [0, fail)                 500 (first half of the band) or 503 (second half)
    [fail, +drop)             the connection is closed without an answer
    [.., +cut_stream)         a stream sends some chunks, then the connection is closed
    [.., +stall)              a stream sends one chunk, then goes silent
    the rest                  no fault

Cut and stall apply to streams only; a plain request in their band is answered normally, so
the shares of 500/503 and drops do not depend on the mix. A second draw decides a latency
spike, independently. Both draws are always taken, so the sequence of faults depends only on
the seed and on the order of requests.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from batchrun.emulator.config import EmulatorConfig


class Fault(enum.Enum):
    """A way an admitted request fails on purpose."""

    ERROR_500 = "error_500"
    ERROR_503 = "error_503"
    DROP = "drop"
    CUT = "cut"
    STALL = "stall"


@dataclass(frozen=True)
class Verdict:
    """What happens to one admitted request: a failing fault or None, and an extra delay."""

    fault: Fault | None
    spike_s: float


NO_FAULT = Verdict(None, 0.0)


class FaultPlan:
    """Draws a :class:`Verdict` per request from ``random.Random(config.seed)``."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._rng = random.Random(config.seed)
        self._bands = _bands(config)
        self._quiet = not self._bands and config.spike_rate == 0.0

    def draw(self, stream: bool) -> Verdict:
        """The fate of the next admitted request; ``stream`` enables cut and stall."""
        if self._quiet:
            return NO_FAULT
        u = self._rng.random()
        spiked = self._rng.random() < self._config.spike_rate
        spike_s = self._config.spike_s if spiked else 0.0
        return Verdict(_pick(self._bands, u, stream), spike_s)

    def reset(self) -> None:
        """Start the sequence again from the seed (the ``/stats/reset`` route)."""
        self._rng.seed(self._config.seed)


_STREAM_ONLY = frozenset({Fault.CUT, Fault.STALL})


def _bands(config: EmulatorConfig) -> list[tuple[float, Fault]]:
    """Upper edges of the stacked bands, in order; empty bands are left out."""
    shares = [
        (config.fail_rate / 2, Fault.ERROR_500),
        (config.fail_rate / 2, Fault.ERROR_503),
        (config.drop_rate, Fault.DROP),
        (config.cut_stream_rate, Fault.CUT),
        (config.stall_rate, Fault.STALL),
    ]
    bands: list[tuple[float, Fault]] = []
    edge = 0.0
    for share, fault in shares:
        edge += share
        if share > 0:
            bands.append((edge, fault))
    return bands


def _pick(bands: list[tuple[float, Fault]], u: float, stream: bool) -> Fault | None:
    for edge, fault in bands:
        if u < edge:
            return fault if stream or fault not in _STREAM_ONLY else None
    return None
