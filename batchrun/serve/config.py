"""``serve.toml``: the upstream, its rates, the team limiter, the state directory and the
clients' keys, validated once like a job file (unknown keys fail loudly, every problem at once).

```toml
[endpoint]                 # as in job files: "local" starts the bundled emulator
base_url = "local"
api_key_env = "SCIBOX_API_KEY"

[models."qwen3-32b-awq"]   # optional rate overrides
rps = 2

[limits]                   # optional: the team's Redis limiter, as in job files
shared = "redis://127.0.0.1:6379/0"

[storage]
path = ".batchrun-serve"   # files, batches, their outputs and the SQLite state

[auth]
keys_env = "BATCHRUN_SERVE_KEYS"   # comma-separated bearer tokens the clients use

[batches]
window_s = 86400           # how long the "24h" completion window lasts (tests shorten it)
max_running = 8            # batches sent at once; the others wait in_progress
max_file_mb = 2048         # the largest upload

[run]                      # [run] keys of a job file, for every batch (retries, timeouts)
```
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from batchrun.errors import JobError
from batchrun.job.checks import describe
from batchrun.job.spec import EndpointSpec, LimitsSpec, ModelSpec, RunSpec, read_toml

DEFAULT_STATE = ".batchrun-serve"
TABLES = frozenset({"endpoint", "models", "limits", "storage", "auth", "batches", "run"})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageSpec(_Section):
    path: str = DEFAULT_STATE


class AuthSpec(_Section):
    keys_env: str = "BATCHRUN_SERVE_KEYS"


class BatchesSpec(_Section):
    window_s: float = Field(default=86_400.0, gt=0)
    max_running: int = Field(default=8, ge=1, le=256)
    max_file_mb: float = Field(default=2048.0, gt=0)
    max_body_mb: float = Field(default=32.0, gt=0)
    """The largest JSON body (a batch's creation, a passed-through request)."""


class ServeConfig(_Section):
    endpoint: EndpointSpec = EndpointSpec()
    models: dict[str, ModelSpec] = {}
    limits: LimitsSpec = LimitsSpec()
    storage: StorageSpec = StorageSpec()
    auth: AuthSpec = AuthSpec()
    batches: BatchesSpec = BatchesSpec()
    run: RunSpec = RunSpec()

    @property
    def state(self) -> Path:
        return Path(self.storage.path)

    @property
    def rates(self) -> dict[str, float]:
        return {name: model.rps for name, model in self.models.items()}


def load_config(path: Path | None) -> ServeConfig:
    """The config at ``path`` (None: every default); JobError naming every problem."""
    if path is None:
        return ServeConfig()
    raw = read_toml(path, "config file")
    try:
        return ServeConfig.model_validate(raw)
    except ValidationError as exc:
        problems = describe(exc, ServeConfig, TABLES)
        raise JobError("\n".join(f"{path}: {line}" for line in problems)) from None
