"""The models SciBox serves, with the figures of its guide (scibox-guide.txt).

A job may override a model's rate with ``[models."NAME"].rps``; the emulator serves exactly
these models with exactly these limits (scaled by ``--rps-scale``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["chat", "embeddings"]


@dataclass(frozen=True)
class ModelInfo:
    """One served model: what it does and how many requests per second a team may send."""

    name: str
    kind: Kind
    rps: float
    dimensions: int | None = None
    thinks: bool = False


MODELS: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo("qwen3-32b-awq", "chat", 2.0, thinks=True),
        ModelInfo("qwen3-coder-30b-a3b-instruct-fp8", "chat", 2.0),
        ModelInfo("bge-m3", "embeddings", 7.0, dimensions=1024),
    )
}

DEFAULT_RPS = 1.0
"""Rate assumed for a model missing from the table (a new model): cautious, override per job."""


def model_rps(name: str, overrides: dict[str, float] | None = None) -> float:
    """The requests per second a team may send to ``name``: the job's override, else the table."""
    if overrides and name in overrides:
        return overrides[name]
    info = MODELS.get(name)
    return info.rps if info else DEFAULT_RPS
