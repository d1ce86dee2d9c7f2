"""How the emulator behaves: rate scale, window, gateway, latency and faults, in one frozen object.

Every share (``*_rate``) is a probability in [0, 1] drawn per admitted request from one
``random.Random(seed)``, so a run with the same seed and the same request order injects the
same faults. The API key is kept out of ``repr()`` so a logged config never shows it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

_SHARES = (
    "fail_rate",
    "drop_rate",
    "cut_stream_rate",
    "stall_rate",
    "spike_rate",
    "invalid_json_rate",
)

GatewayName = Literal["none", "vllm", "litellm"]
"""What the emulator answers as (see :mod:`batchrun.emulator.gateways`)."""

GATEWAYS: tuple[GatewayName, ...] = get_args(GatewayName)


@dataclass(frozen=True)
class EmulatorConfig:
    """What the emulator does besides answering: pacing, shape, latency and injected faults.

    ``rps_scale`` multiplies every model's catalog rate (a huge value lifts the limits);
    ``window_s`` is the length of the rate window: 1.0 is SciBox's sliding 1-second window,
    any other value a fixed window aligned to the wall clock admitting
    ``round(rps * rps_scale * window_s)`` requests (60: LiteLLM's per-minute ``rpm``);
    ``gateway`` is what the answers look like: ``"none"`` (SciBox as today), ``"vllm"`` (vLLM
    with a reasoning parser, talked to directly) or ``"litellm"`` (LiteLLM Proxy before vLLM);
    ``latency_s`` is added to every answer (a stream spreads its chunks over it);
    ``fail_rate`` answers 500 or 503 (half each), ``drop_rate`` closes the connection without
    an answer, ``cut_stream_rate`` ends a stream early without ``[DONE]``, ``stall_rate`` makes
    a stream go silent after its first chunk, ``spike_rate`` delays an answer by ``spike_s``,
    ``invalid_json_rate`` answers a structured request with broken or schema-violating JSON
    (chosen by a hash of the request body: ``batchrun.emulator.structured``).
    ``api_key``, when set, is the only bearer token accepted.
    """

    rps_scale: float = 1.0
    window_s: float = 1.0
    gateway: GatewayName = "none"
    latency_s: float = 0.0
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    cut_stream_rate: float = 0.0
    stall_rate: float = 0.0
    spike_rate: float = 0.0
    spike_s: float = 0.0
    invalid_json_rate: float = 0.0
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
        problems += self._shape_problems()
        if problems:
            raise ValueError("EmulatorConfig: " + "; ".join(problems))

    def _shares(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in _SHARES}

    def _shape_problems(self) -> list[str]:
        problems = []
        if not (self.window_s > 0 and math.isfinite(self.window_s)):
            problems.append(f"window_s must be a finite number > 0, got {self.window_s!r}")
        if self.gateway not in GATEWAYS:
            problems.append(f"gateway must be one of {', '.join(GATEWAYS)}; got {self.gateway!r}")
        return problems
