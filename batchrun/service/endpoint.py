"""The service a job talks to: an ``Api`` for its ``[endpoint]`` (the bundled emulator for
``base_url = "local"``), and the check, before any row is sent, that it serves every model the
job names.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from batchrun.emulator import EmulatorConfig, running_emulator
from batchrun.errors import ApiError, FatalError, JobError, RetryableError
from batchrun.job.spec import EndpointSpec, RunSpec
from batchrun.service.client import Api

LOCAL_TOKEN = "local-emulator"


class Unreachable(FatalError):
    """Nothing answered at the endpoint (no status at all)."""


@asynccontextmanager
async def open_endpoint(endpoint: EndpointSpec, run: RunSpec) -> AsyncIterator[Api]:
    """An Api for an endpoint; for ``base_url = "local"`` the bundled emulator is started on a
    free 127.0.0.1 port for as long as the Api is used."""
    token = api_token(endpoint)
    if endpoint.is_local:
        async with (
            running_emulator(EmulatorConfig()) as base_url,
            Api.from_endpoint(endpoint, run, base_url, token or LOCAL_TOKEN) as api,
        ):
            yield api
        return
    if not token:
        raise JobError(
            f"no API key: set the environment variable {endpoint.api_key_env} to your SciBox "
            f"token for {endpoint.base_url} (it is never read from a file)"
        )
    async with Api.from_endpoint(endpoint, run, endpoint.base_url, token) as api:
        yield api


def api_token(endpoint: EndpointSpec) -> str:
    """The token in ``[endpoint].api_key_env``, without the spaces and line breaks around it;
    one holding a control character (a line break inside it) cannot go in a header."""
    token = os.environ.get(endpoint.api_key_env, "").strip()
    if any(ord(char) < 32 or ord(char) == 127 for char in token):
        raise JobError(
            f"{endpoint.api_key_env}: the API key holds a line break or another control "
            "character; set the variable to the token alone, on one line"
        )
    return token


async def check_endpoint(api: Api, models: Mapping[str, str] | None = None) -> list[str]:
    """The served models. FatalError when the endpoint cannot be reached, refuses the token,
    or does not serve one of ``models`` (model name -> the job-file key that names it)."""
    try:
        served = await api.list_models()
    except RetryableError as exc:
        if exc.status is not None:  # 5xx or 429 on the listing: the run itself will retry
            return []
        raise Unreachable(
            f"cannot reach {api.base_url}: {exc}; check [endpoint].base_url and the network"
        ) from None
    except FatalError:
        raise
    except ApiError as exc:  # a gateway without its key database answers 400
        raise FatalError(
            f"{api.base_url} would not list its models ({exc}); check the token in "
            f"{api.key_env} and [endpoint].base_url"
        ) from None
    missing = {m: key for m, key in (models or {}).items() if served and m not in served}
    if missing:
        keys = ", ".join(f"{key} = {m!r}" for m, key in missing.items())
        raise FatalError(
            f"{api.base_url} does not serve {keys} (it serves: {', '.join(served)}); "
            "fix the job file (`batchrun models JOB.toml` lists them)"
        )
    return served
