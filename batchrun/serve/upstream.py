"""The service behind the server (SciBox, or the bundled emulator for ``base_url = "local"``)
and the passthrough: ``/v1/models``, ``/v1/chat/completions`` and ``/v1/embeddings`` forwarded
with the server's own upstream key, the two POSTs paced through the same shared slots as the
batches (``fairslots``: interactive requests take their turn among the batches, so a busy
batch never starves them). Streams are copied through as they come.

The upstream key is read from the environment (``[endpoint].api_key_env``) and sent only in the
upstream request's ``Authorization`` header; the client's own header is never forwarded.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from batchrun.emulator import EmulatorConfig, running_emulator
from batchrun.errors import JobError
from batchrun.job.catalog import model_rps
from batchrun.job.spec import EndpointSpec
from batchrun.send.pacing import Pacer
from batchrun.serve.fairslots import SharedPacing
from batchrun.serve.problems import Problem
from batchrun.service.endpoint import LOCAL_TOKEN

PASSED_HEADERS = ("Content-Type", "Retry-After", "X-Request-Id")
MODELS_TTL_S = 60.0


class Upstream:
    """The upstream's base URL, key and one HTTP session for the passthrough."""

    def __init__(self, base_url: str, token: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._session = session
        self._models: tuple[float, frozenset[str] | None] = (-MODELS_TTL_S, None)

    def __repr__(self) -> str:
        return f"Upstream({self.base_url!r})"

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    async def served(self) -> frozenset[str] | None:
        """The models the upstream serves (asked at most once a minute); None if it would
        not say."""
        asked, models = self._models
        if time.monotonic() - asked < MODELS_TTL_S and models is not None:
            return models
        try:
            async with self._session.get(f"{self.base_url}/models", headers=self._auth) as reply:
                body = await reply.json() if reply.status == 200 else None
            models = frozenset(str(m["id"]) for m in body["data"]) if body else None
        except (aiohttp.ClientError, TimeoutError, KeyError, TypeError, ValueError):
            models = None
        self._models = (time.monotonic(), models)
        return models

    async def forward(
        self, request: web.Request, path: str, body: bytes | None, pacer: Pacer | None
    ) -> web.StreamResponse:
        """Send the request on and copy the answer back (a stream as it comes)."""
        headers = {**self._auth, "Content-Type": "application/json"}
        method = "POST" if body is not None else "GET"
        if pacer is not None:
            await pacer.slot()
        try:
            async with self._session.request(
                method, f"{self.base_url}{path}", data=body, headers=headers
            ) as reply:
                _feed_back(pacer, reply.status)
                return await _copied(request, reply)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Problem(
                502, f"The upstream service did not answer ({type(exc).__name__}); try again.",
                kind="server_error",
            ) from None  # fmt: skip


def _feed_back(pacer: Pacer | None, status: int) -> None:
    if pacer is None:
        return
    if status == 429:
        pacer.throttled()
    elif status < 400:
        pacer.answered()


async def _copied(request: web.Request, reply: aiohttp.ClientResponse) -> web.StreamResponse:
    headers = {name: reply.headers[name] for name in PASSED_HEADERS if name in reply.headers}
    headers |= {k: v for k, v in reply.headers.items() if k.lower().startswith("x-ratelimit")}
    if reply.headers.get("Content-Type", "").startswith("text/event-stream"):
        response = web.StreamResponse(status=reply.status, headers=headers)
        await response.prepare(request)
        async for chunk in reply.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response
    return web.Response(status=reply.status, body=await reply.read(), headers=headers)


class Passthrough:
    """The interactive routes: one pacer per model over the batches' shared slots."""

    def __init__(self, upstream: Upstream, pacing: SharedPacing, rates: dict[str, float]):
        self._upstream, self._pacing, self._rates = upstream, pacing, rates
        self._pacers: dict[str, Pacer] = {}

    async def post(self, request: web.Request, path: str) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Problem(400, "The request body is not valid JSON.") from None
        model = parsed.get("model") if isinstance(parsed, dict) else None
        if not isinstance(model, str) or not model:
            raise Problem(400, "Missing required parameter: 'model'.", param="model")
        if model not in self._pacers:
            self._pacers[model] = self._pacing.pacer(model, model_rps(model, self._rates))
        return await self._upstream.forward(request, path, body, self._pacers[model])

    async def get(self, request: web.Request, path: str) -> web.StreamResponse:
        return await self._upstream.forward(request, path, None, None)


@contextlib.asynccontextmanager
async def opened(endpoint: EndpointSpec, timeout_s: float) -> AsyncIterator[Upstream]:
    """The upstream for ``[endpoint]``: for ``local``, the bundled emulator on a free
    127.0.0.1 port for as long as the server runs."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        if endpoint.is_local:
            # The batches' jobs read the key from the environment; the emulator takes any.
            token = os.environ.setdefault(endpoint.api_key_env, LOCAL_TOKEN)
            async with running_emulator(EmulatorConfig()) as base_url:
                yield Upstream(base_url, token, session)
            return
        token = os.environ.get(endpoint.api_key_env, "").strip()
        if not token:
            raise JobError(
                f"no upstream key: set the environment variable {endpoint.api_key_env} to the "
                f"token for {endpoint.base_url} (it is never read from a file)"
            )
        yield Upstream(endpoint.base_url, token, session)
