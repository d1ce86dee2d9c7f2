"""The ``gateway`` fixture: one LiteLLM Proxy with the SciBox models in front of an emulator,
shared by the session. The gateway tests run only when ``BATCHRUN_GATEWAY_TESTS=1`` (``make
test-gateway`` sets it and installs LiteLLM in ``.venv-gateway``); otherwise they are skipped."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.gateway.litellm_proxy import (
    LITELLM_BIN,
    Gateway,
    GatewaySpec,
    Route,
    running_gateway,
    scibox_routes,
)

ENABLE_ENV = "BATCHRUN_GATEWAY_TESTS"
SHARED_KEY_MODELS = ("shared-alone", "shared-redis")
"""Names of more chat deployments (rpm 120, the chat model upstream), so that scenarios that
measure one per-minute window each can run at the same time without sharing a counter."""


def require_gateway() -> None:
    """Skip, with the reason, unless the gateway tests are asked for and LiteLLM is installed."""
    if os.environ.get(ENABLE_ENV) != "1":
        pytest.skip(f"gateway tests run only with {ENABLE_ENV}=1 (`make test-gateway`)")
    if not LITELLM_BIN.exists():
        pytest.skip(f"{LITELLM_BIN} is missing: `make test-gateway` installs the pinned LiteLLM")


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A LiteLLM Proxy routing the three SciBox models (rpm 120/120/420) and
    ``SHARED_KEY_MODELS`` (rpm 120) to one emulator."""
    require_gateway()
    extra = tuple(Route(name, "qwen3-32b-awq", rpm=120) for name in SHARED_KEY_MODELS)
    spec = GatewaySpec(routes=scibox_routes() + extra)
    with running_gateway(spec, tmp_path_factory.mktemp("gateway")) as running:
        yield running
