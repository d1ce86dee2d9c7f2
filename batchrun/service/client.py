"""The only place that speaks HTTP: SciBox's OpenAI-compatible API over aiohttp.

Statuses and aiohttp's exceptions are translated here, once, into batchrun's error tree, by
the rules of ``batchrun.service.statuses``: 429/408/5xx, timeouts and dropped connections become
``RetryableError`` (with ``Retry-After``); 400 becomes ``RowError``; 401/403/404 become
``FatalError`` with a message that says what to fix. Every error names the model it was sent to.
The API key lives in one header and never appears in a message or a ``repr()``: the one
redaction of what the service echoes back is ``Api._redact``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from types import TracebackType
from typing import Any

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError

from batchrun.errors import ApiError, FatalError, RetryableError, RowError
from batchrun.job.spec import EndpointSpec, RunSpec
from batchrun.service.answers import (
    ChatAnswer,
    EmbeddingAnswer,
    RawAnswer,
    StreamAccumulator,
    chat_answer,
    embedding_answer,
    raw_answer,
)
from batchrun.service.ratelimits import read_quota, read_throttle
from batchrun.service.statuses import error_class

CONNECT_TIMEOUT_MAX_S = 30.0


class Api:
    """A client of one endpoint with one token. Use as ``async with Api(...) as api``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float,
        idle_timeout_s: float | None,
        key_env: str,
        max_connections: int,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self.key_env = key_env
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_s,
            sock_connect=min(timeout_s, CONNECT_TIMEOUT_MAX_S),
            sock_read=idle_timeout_s,
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_endpoint(cls, endpoint: EndpointSpec, run: RunSpec, base_url: str, token: str) -> Api:
        """The client a job's ``[endpoint]`` and ``[run]`` ask for, at ``base_url``."""
        return cls(
            base_url,
            token,
            timeout_s=run.timeout_s,
            idle_timeout_s=run.idle_timeout_s,
            key_env=endpoint.api_key_env,
            max_connections=run.most_in_flight,
        )

    def __repr__(self) -> str:
        return f"Api({self.base_url!r}, key=<hidden>)"

    async def __aenter__(self) -> Api:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self._key}"},
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(limit=self._max_connections),
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def list_models(self) -> list[str]:
        """The ids of the models the endpoint serves (``GET /v1/models``)."""
        async with self._call("GET", "/models", None) as response:
            body = await self._json(response)
        return sorted(str(model["id"]) for model in body.get("data", []))

    async def chat(self, model: str, body: dict[str, Any], *, stream: bool = False) -> ChatAnswer:
        """One chat completion; ``stream`` reads it as SSE chunks."""
        payload = {**body, "model": model}
        if not stream:
            async with self._call("POST", "/chat/completions", payload, model) as response:
                answer = chat_answer(await self._json(response))
                return replace(answer, quota=read_quota(response.headers))
        payload["stream"] = True
        # vLLM, LiteLLM and OpenAI send a usage chunk only when asked.
        payload.setdefault("stream_options", {"include_usage": True})
        accumulator = StreamAccumulator()
        async with self._call("POST", "/chat/completions", payload, model) as response:
            quota = read_quota(response.headers)
            async for line in response.content:
                accumulator.feed(line)
                if accumulator.done:
                    break
        return replace(accumulator.finish(), quota=quota)

    async def embed(self, model: str, body: dict[str, Any]) -> EmbeddingAnswer:
        """Vectors for ``body["input"]``, in input order. Asks for base64 float32 (a quarter
        of the bytes and no float parsing; what the official client asks for too) unless the
        job's ``[params]`` say otherwise."""
        payload = {"encoding_format": "base64", **body, "model": model}
        async with self._call("POST", "/embeddings", payload, model) as response:
            answer = embedding_answer(await self._json(response), len(body["input"]))
            return replace(answer, quota=read_quota(response.headers))

    async def post(self, path: str, model: str, body: dict[str, Any]) -> RawAnswer:
        """``body`` sent to ``path`` as written (``/chat/completions``, ``/embeddings``); the
        answer kept as the service sent it."""
        async with self._call("POST", path, {**body, "model": model}, model) as response:
            raw = await response.read()
            parsed = self._parsed(raw)
            request_id = response.headers.get("x-request-id") or parsed.get("id")
            answer = raw_answer(raw, parsed, request_id if isinstance(request_id, str) else None)
            return replace(answer, quota=read_quota(response.headers))

    @asynccontextmanager
    async def _call(
        self, method: str, path: str, payload: dict[str, Any] | None, model: str | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send one request; yield a 2xx response, raise our error for anything else."""
        if self._session is None:
            raise RuntimeError("use Api as 'async with Api(...) as api'")
        data = orjson.dumps(payload) if payload is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else None
        url = self.base_url + path
        try:
            async with self._session.request(method, url, data=data, headers=headers) as response:
                if response.status >= 300:
                    raise await self._status_error(response, url, model)
                yield response
        except ApiError:
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise RetryableError(f"no answer from {url} in time", model=model) from None
        except aiohttp.ClientConnectorError as exc:
            message = f"cannot connect to {url}: {exc.os_error}"
            raise RetryableError(message, model=model) from None
        except (aiohttp.ClientError, HttpProcessingError, ConnectionError) as exc:
            message = f"connection to {url} dropped ({type(exc).__name__})"
            raise RetryableError(message, model=model) from None

    async def _json(self, response: aiohttp.ClientResponse) -> dict[str, Any]:
        return self._parsed(await response.read())

    def _parsed(self, raw: bytes) -> dict[str, Any]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            text = self._redact(raw.decode("utf-8", "replace"))[:80]
            raise RetryableError(f"the service answered with non-JSON: {text!r}") from None
        if not isinstance(body, dict):
            raise RetryableError("the service answered with JSON that is not an object")
        return body

    async def _status_error(
        self, response: aiohttp.ClientResponse, url: str, model: str | None
    ) -> ApiError:
        status = response.status
        try:
            raw = await response.read()
        except aiohttp.ClientError:
            raw = (response.reason or "").encode()
        message, body = _error_detail(raw)
        error = self._error(status, url, model, self._redact(message)[:300], response, body)
        error.answer = self._redact(raw.decode("utf-8", "replace")).encode()
        error.request_id = response.headers.get("x-request-id")
        return error

    def _error(
        self,
        status: int,
        url: str,
        model: str | None,
        detail: str,
        response: aiohttp.ClientResponse,
        body: Any,
    ) -> ApiError:
        kind = error_class(status, detail)
        if kind is RetryableError:
            throttle = read_throttle(response.headers, body)
            return RetryableError(
                f"{status} from {url}: {detail}", status, throttle.retry_after, model,
                window_reset=throttle.window_reset,
            )  # fmt: skip
        if kind is FatalError:
            return FatalError(self._fatal_advice(status, url, model, detail), status, model)
        return RowError(f"{status} bad request: {detail}", status, model)

    def _fatal_advice(self, status: int, url: str, model: str | None, detail: str) -> str:
        if status == 401:
            return (
                f"401 from {url}: the service rejected the token ({detail}); "
                f"set a valid token in the environment variable {self.key_env}"
            )
        if status == 403:
            return (
                f"403 from {url}: the token has no access to model {model!r} ({detail}); "
                "ask the service's support for access or use another model"
            )
        if status == 404 and model is None:
            return (
                f"404 from {url}: wrong URL ({detail}); check [endpoint].base_url (it ends in /v1)"
            )
        if status in (400, 404):  # 400: a gateway's answer to an unknown model
            return (
                f"{status} from {url}: wrong URL or model {model!r} ({detail}); "
                "check [endpoint].base_url (it ends in /v1) and the model name "
                "(`batchrun models JOB` lists them)"
            )
        return f"{status} from {url}: {detail}"

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "<hidden>") if self._key else text


def _error_detail(raw: bytes) -> tuple[str, Any]:
    """The service's error message (OpenAI-style ``{"error": {"message": ...}}``) and the
    parsed body (None when it is not JSON)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace"), None
    try:
        return str(body["error"]["message"]), body
    except (KeyError, TypeError):
        return raw.decode("utf-8", "replace"), body
