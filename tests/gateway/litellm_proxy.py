"""A real LiteLLM Proxy (SciBox's front door) in front of the bundled emulator, for the gateway
tests: ``running_gateway(GatewaySpec(), workdir)`` starts one emulator process per upstream
(``batchrun.bench.processes.Emulator``, the tests' usual one) and ``.venv-gateway/bin/litellm``
on free 127.0.0.1 ports with a generated config, waits until the proxy answers, and stops all
of them by their pids when the block ends.

What the pinned LiteLLM needs to start here, offline and without a database:

- a master key (it refuses to start without one): a random ``sk-...`` made per run;
- ``LITELLM_LOCAL_MODEL_COST_MAP=True``, or it fetches its model cost map from the internet at
  start (it falls back to its bundled copy, but only after trying);
- the ``prisma`` package (not in ``litellm[proxy]``), or a request without a key gets a bare 500
  instead of a 401 (its error path imports ``prisma``); no database is needed;
- ``routing_strategy: usage-based-routing-v2``: the default strategy treats a deployment's
  ``rpm`` as a weight and never refuses; this one refuses past ``rpm - 1`` requests in the UTC
  calendar minute.

Per-key and per-team limits need keys, which live in LiteLLM's database; without one, a
``custom_auth`` module (generated from ``GatewaySpec.keys``) hands LiteLLM the keys and their
limits, and LiteLLM's own limiter enforces them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from batchrun.bench.processes import Emulator, log_tail, terminate
from batchrun.bench.redisserver import free_port

REPO = Path(__file__).resolve().parents[2]
LITELLM_BIN = REPO / ".venv-gateway" / "bin" / "litellm"
"""Installed by ``make test-gateway`` from ``requirements.txt`` beside this file (exact pins)."""

HOST = "127.0.0.1"
START_TIMEOUT_S = 120.0
"""LiteLLM takes 15-20 s to start on a 2-core machine; more when the machine is busy."""
STOP_TIMEOUT_S = 10.0
ATTEMPTS = 3
"""Tries, each on a new free port (another process may take the port before LiteLLM binds)."""
UPSTREAM_TOKEN = "emulator-token"
"""What LiteLLM sends the emulator as its bearer token (the emulator accepts any)."""

SCIBOX_RPM: Mapping[str, int] = {
    "qwen3-32b-awq": 120,
    "qwen3-coder-30b-a3b-instruct-fp8": 120,
    "bge-m3": 420,
}
"""SciBox's per-model limits (2, 2 and 7 requests per second) as deployment ``rpm``."""

OFFLINE_ENV: Mapping[str, str] = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY_DISABLED": "true",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    "PYTHONUNBUFFERED": "1",
}
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")
"""The only variables LiteLLM gets from ours: no DATABASE_URL, REDIS_*, LITELLM_*, proxies."""

AUTH_MODULE = "gateway_auth"
_AUTH_SOURCE = '''"""LiteLLM custom_auth with fixed keys (by tests/gateway/litellm_proxy.py)."""

from litellm.proxy._types import UserAPIKeyAuth

KEYS = {keys!r}


async def user_api_key_auth(request, api_key):
    limits = KEYS.get(api_key)
    if limits is None:
        raise Exception("unknown key")
    return UserAPIKeyAuth(api_key=api_key, **limits)
'''


class GatewayError(Exception):
    """LiteLLM or an emulator did not start; the message has the tail of its log."""


@dataclass(frozen=True)
class Route:
    """A model name clients send, served by ``upstream_model`` on the emulator ``upstream``,
    with LiteLLM's deployment limits (None: none)."""

    name: str
    upstream_model: str = ""
    """The emulator's model; empty means the same as ``name``."""
    upstream: str = "main"
    rpm: int | None = None
    tpm: int | None = None


def scibox_routes(
    rpm: Mapping[str, int | None] | None = None, upstream: str = "main"
) -> tuple[Route, ...]:
    """The three SciBox models on ``upstream``, with ``SCIBOX_RPM`` overridden by ``rpm``."""
    limits = {**SCIBOX_RPM, **(rpm or {})}
    return tuple(Route(name, upstream=upstream, rpm=limit) for name, limit in limits.items())


@dataclass(frozen=True)
class Upstream:
    """Options of one emulator process (``batchrun emulator``)."""

    rps_scale: float = 100.0
    """100 lifts the emulator's limits far above LiteLLM's; 1 keeps SciBox's (and its 429s)."""
    options: tuple[str, ...] = ()
    """More command-line options, e.g. ``("--fail-rate", "0.1")``."""


@dataclass(frozen=True)
class VirtualKey:
    """A key the generated ``custom_auth`` accepts, with LiteLLM's per-key and per-team limits
    (per minute, counted in a 60 s window that opens with the first request)."""

    key: str
    team_id: str | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    team_rpm_limit: int | None = None
    team_tpm_limit: int | None = None

    def limits(self) -> dict[str, str | int]:
        fields = {
            "team_id": self.team_id,
            "rpm_limit": self.rpm_limit,
            "tpm_limit": self.tpm_limit,
            "team_rpm_limit": self.team_rpm_limit,
            "team_tpm_limit": self.team_tpm_limit,
        }
        return {name: value for name, value in fields.items() if value is not None}


def _default_upstreams() -> dict[str, Upstream]:
    return {"main": Upstream()}


@dataclass(frozen=True)
class GatewaySpec:
    """What to run: the routes, the emulators behind them, and LiteLLM's router settings."""

    routes: tuple[Route, ...] = field(default_factory=scibox_routes)
    upstreams: Mapping[str, Upstream] = field(default_factory=_default_upstreams)
    routing_strategy: str = "usage-based-routing-v2"
    num_retries: int | None = 0
    """0: every 429 reaches the client at once. None: LiteLLM's default, 2 retries inside the
    proxy, each after the 429's retry-after (60 s for its own rpm limit) plus jitter."""
    keys: tuple[VirtualKey, ...] = ()
    """With keys, only they and the master key are accepted (through ``custom_auth``)."""
    start_timeout_s: float = START_TIMEOUT_S


@dataclass(frozen=True)
class Gateway:
    """A running proxy: its OpenAI-style base URL, its master key, the emulators' base URLs."""

    base_url: str
    master_key: str
    upstream_urls: Mapping[str, str]
    config: Path
    log: Path

    @property
    def root_url(self) -> str:
        """The base URL without ``/v1`` (for ``/health/liveliness``)."""
        return self.base_url.removesuffix("/v1")


def litellm_config(
    spec: GatewaySpec, upstream_urls: Mapping[str, str], master_key: str
) -> dict[str, object]:
    """The proxy's config (written as JSON, which LiteLLM reads as YAML)."""
    models = []
    for route in spec.routes:
        params: dict[str, object] = {
            "model": f"openai/{route.upstream_model or route.name}",
            "api_base": upstream_urls[route.upstream],
            "api_key": UPSTREAM_TOKEN,
        }
        params.update({k: v for k, v in (("rpm", route.rpm), ("tpm", route.tpm)) if v is not None})
        models.append({"model_name": route.name, "litellm_params": params})
    general: dict[str, object] = {"master_key": master_key}
    if spec.keys:
        general["custom_auth"] = f"{AUTH_MODULE}.user_api_key_auth"
    router: dict[str, object] = {"routing_strategy": spec.routing_strategy}
    if spec.num_retries is not None:
        router["num_retries"] = spec.num_retries
    return {"model_list": models, "general_settings": general, "router_settings": router}


def auth_source(keys: tuple[VirtualKey, ...], master_key: str) -> str:
    """The ``custom_auth`` module: the keys with their limits, and the master key without."""
    table: dict[str, dict[str, str | int]] = {master_key: {}}
    table.update({key.key: key.limits() for key in keys})
    return _AUTH_SOURCE.format(keys=table)


def litellm_env() -> dict[str, str]:
    passed = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
    return {**passed, **OFFLINE_ENV}


@contextlib.contextmanager
def running_gateway(
    spec: GatewaySpec, workdir: Path, litellm: Path = LITELLM_BIN
) -> Iterator[Gateway]:
    """The emulators and LiteLLM, running for the block; stopped (LiteLLM first) when it ends."""
    if not litellm.exists():
        raise GatewayError(f"{litellm} is missing: run `make test-gateway` to install it")
    workdir.mkdir(parents=True, exist_ok=True)
    master_key = f"sk-{secrets.token_hex(16)}"
    with contextlib.ExitStack() as stack:
        urls = {
            name: stack.enter_context(
                Emulator(
                    workdir,
                    rps_scale=upstream.rps_scale,
                    options=upstream.options,
                    name=f"emulator-{name}",
                )
            ).base_url
            for name, upstream in spec.upstreams.items()
        }
        config = workdir / "litellm.yaml"
        config.write_text(json.dumps(litellm_config(spec, urls, master_key), indent=2))
        if spec.keys:
            (workdir / f"{AUTH_MODULE}.py").write_text(auth_source(spec.keys, master_key))
        log = workdir / "litellm.log"
        port = stack.enter_context(_litellm(litellm, config, log, master_key, spec))
        yield Gateway(f"http://{HOST}:{port}/v1", master_key, urls, config, log)


@contextlib.contextmanager
def _litellm(
    binary: Path, config: Path, log: Path, master_key: str, spec: GatewaySpec
) -> Iterator[int]:
    """LiteLLM on a free port, once it answers; the port. Stopped when the block ends."""
    for _ in range(ATTEMPTS):
        port = free_port()
        command = [str(binary), "--config", str(config), "--host", HOST, "--port", str(port)]
        with log.open("ab") as sink:
            process = subprocess.Popen(
                command, cwd=config.parent, env=litellm_env(), stdout=sink, stderr=sink
            )
        try:
            if _wait_ready(process, port, master_key, spec.start_timeout_s):
                yield port
                return
        finally:
            terminate(process)
    raise GatewayError(f"LiteLLM did not start: {log_tail(log, 8)}")


def _wait_ready(
    process: subprocess.Popen[bytes], port: int, master_key: str, timeout_s: float
) -> bool:
    """Whether LiteLLM lists its models to the master key before it exits; raises on timeout."""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        if _status(f"http://{HOST}:{port}/v1/models", master_key) == 200:
            return True
        if time.monotonic() > deadline:
            raise GatewayError(f"LiteLLM was not ready in {timeout_s:g} s")
        time.sleep(0.25)
    return False


_NO_PROXIES = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _status(url: str, key: str) -> int | None:
    """The HTTP status of a GET with the key, or None when nothing answers."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with _NO_PROXIES.open(request, timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None
