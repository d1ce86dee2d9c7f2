"""How the emulator behaves: rate scale, latency and the faults it injects, in one frozen object.

Every share (``*_rate``) is a probability in [0, 1] drawn per admitted request from one
``random.Random(seed)``, so a run with the same seed and the same request order injects the
same faults. The API key is kept out of ``repr()`` so a logged config never shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_SHARES = ("fail_rate", "drop_rate", "cut_stream_rate", "stall_rate", "spike_rate")


@dataclass(frozen=True)
class EmulatorConfig:
    """What the emulator does besides answering: pacing, latency and injected faults.

    ``rps_scale`` multiplies every model's catalog rate (a huge value lifts the limits);
    ``latency_s`` is added to every answer (a stream spreads its chunks over it);
    ``fail_rate`` answers 500 or 503 (half each), ``drop_rate`` closes the connection without
    an answer, ``cut_stream_rate`` ends a stream early without ``[DONE]``, ``stall_rate`` makes
    a stream go silent after its first chunk, ``spike_rate`` delays an answer by ``spike_s``.
    ``api_key``, when set, is the only bearer token accepted.
    """

    rps_scale: float = 1.0
    latency_s: float = 0.0
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    cut_stream_rate: float = 0.0
    stall_rate: float = 0.0
    spike_rate: float = 0.0
    spike_s: float = 0.0
    api_key: str | None = field(default=None, repr=False)
    seed: int = 0

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be in [0, 1], got {value!r}"
            for name, value in self._shares().items()
            if not 0.0 <= value <= 1.0
        ]
        failing = self.fail_rate + self.drop_rate + self.cut_stream_rate + self.stall_rate
        if failing > 1.0:
            problems.append(
                f"fail_rate + drop_rate + cut_stream_rate + stall_rate is {failing} > 1"
            )
        if not self.rps_scale > 0:
            problems.append(f"rps_scale must be > 0, got {self.rps_scale!r}")
        if not (self.latency_s >= 0 and self.spike_s >= 0):
            problems.append("latency_s and spike_s must be >= 0")
        if problems:
            raise ValueError("EmulatorConfig: " + "; ".join(problems))

    def _shares(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in _SHARES}
