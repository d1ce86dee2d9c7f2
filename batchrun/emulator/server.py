"""The aiohttp application: SciBox's OpenAI-compatible routes, guarded as the service guards them.

Each ``/v1`` request goes through, in order: bearer auth (401), JSON body and model lookup
(400/404), the model's rate window (429, before anything else costs time), the payload checks
(400: admitted requests count against the limit even when rejected), the injected faults, the
latency, and the deterministic answer. The configured gateway (:mod:`.gateways`) shapes the
answers, the unknown-model and 429 errors, and the quota headers. ``/stats`` and
``/stats/reset`` need no token. Nothing is logged per request, and no response ever echoes
the token.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web

from batchrun.clock import Clock
from batchrun.emulator.bodies import (
    BadRequest,
    UnknownModel,
    chat_request,
    embedding_request,
    find_model,
    parse_body,
)
from batchrun.emulator.config import EmulatorConfig
from batchrun.emulator.counters import Counters, ModelCounters
from batchrun.emulator.faults import Fault, FaultPlan, Verdict
from batchrun.emulator.gateways import GATEWAYS
from batchrun.emulator.limits import window_for
from batchrun.emulator.replies import HttpError, json_reply
from batchrun.emulator.streaming import close_connection, event_lines, send_events, usage_json
from batchrun.emulator.structured import response_schema, structured_summary
from batchrun.emulator.summaries import count_tokens, summarise
from batchrun.emulator.vectors import embed, embed_base64
from batchrun.job.catalog import MODELS, ModelInfo

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_Checked = TypeVar("_Checked")


class _Dropped(Exception):
    """The connection was closed on purpose; there is nothing to answer."""


@dataclass(frozen=True)
class Admission:
    """A request that passed its model's rate window; ``headers`` go on its 200."""

    raw: bytes
    body: dict[str, object]
    model: ModelInfo
    stats: ModelCounters
    headers: dict[str, str]

    def check(self, parse: Callable[[dict[str, object], ModelInfo], _Checked]) -> _Checked:
        """The typed request ``parse`` makes of the body; a 400 (counted) if it is wrong."""
        try:
            return parse(self.body, self.model)
        except BadRequest as exc:
            self.stats.rejected += 1
            raise _bad_request(exc) from None


class Emulator:
    """The state behind one app: config, per-model windows and counters, the fault plan."""

    def __init__(
        self, config: EmulatorConfig, clock: Clock = time.monotonic, wall: Clock = time.time
    ) -> None:
        self.config = config
        self.gateway = GATEWAYS[config.gateway]
        rates = {name: info.rps * config.rps_scale for name, info in MODELS.items()}
        self.stats = Counters(
            {
                name: ModelCounters(rps, window_for(rps, clock, config.window_s, wall))
                for name, rps in rates.items()
            }
        )
        self.faults = FaultPlan(config)
        self.stopping = asyncio.Event()

    def check_token(self, request: web.Request) -> None:
        """Raise 401 unless the request bears a token (the configured one, if any)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            self.stats.unauthorized += 1
            message = "Missing bearer token: send the header 'Authorization: Bearer <YOUR_TOKEN>'"
            raise HttpError(401, message, "authentication_error", "missing_api_key")
        key = self.config.api_key
        if key is not None and not hmac.compare_digest(token.encode(), key.encode()):
            self.stats.unauthorized += 1
            message = "Invalid API key: the bearer token was not accepted; check your token"
            raise HttpError(401, message, "authentication_error", "invalid_api_key")

    async def admit(self, request: web.Request) -> Admission:
        """Read the body, find its model and pass the model's rate window (else 400/404/429)."""
        raw = await request.read()
        try:
            body = parse_body(raw)
            model = find_model(body)
        except BadRequest as exc:
            raise _bad_request(exc) from None
        except UnknownModel as exc:
            self.stats.unknown_model += 1
            raise self.gateway.unknown_model(exc) from None
        stats = self.stats.models[model.name]
        wait = stats.admit()
        if wait:
            raise self.gateway.throttled(model.name, stats.window, wait)
        return Admission(raw, body, model, stats, self.gateway.quota_headers(stats.window))

    async def inject(self, request: web.Request, stats: ModelCounters, stream: bool) -> Verdict:
        """Draw this request's faults, fail it now if it should, and sleep its spike."""
        verdict = self.faults.draw(stream)
        stats.record(verdict)
        if verdict.fault is Fault.ERROR_500:
            raise HttpError(500, "Internal server error (injected)", "server_error", "internal")
        if verdict.fault is Fault.ERROR_503:
            message = "Service unavailable (injected); retry later"
            raise HttpError(503, message, "server_error", "service_unavailable")
        if verdict.fault is Fault.DROP:
            close_connection(request)
            raise _Dropped
        if verdict.spike_s:
            await asyncio.sleep(verdict.spike_s)
        return verdict

    def reset(self) -> None:
        """Zero the counters and windows and restart the fault sequence from the seed."""
        self.stats.reset()
        self.faults.reset()


def _bad_request(exc: BadRequest) -> HttpError:
    return HttpError(400, str(exc), "invalid_request_error", "invalid_request")


EMULATOR = web.AppKey("emulator", Emulator)
MODELS_CREATED = 1_735_689_600
"""When the catalog's models say they were created (2025-01-01, fixed: answers are stable)."""


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the token on /v1 routes and turn our errors into OpenAI-style JSON answers."""
    api = request.path.startswith("/v1/")
    try:
        if api:
            request.app[EMULATOR].check_token(request)
        return await handler(request)
    except HttpError as exc:
        return exc.response()
    except _Dropped:
        return web.Response(status=500)  # never sent: the transport is already closed
    except web.HTTPException as exc:
        if not api:
            raise
        code = exc.reason.lower().replace(" ", "_")  # "not_found", "method_not_allowed"
        return HttpError(exc.status, exc.reason, "invalid_request_error", code).response()


def _model_card(name: str) -> dict[str, object]:
    """What ``/v1/models`` says of one model (the fields of the ``openai`` client's Model)."""
    return {"id": name, "object": "model", "created": MODELS_CREATED, "owned_by": "scibox"}


async def list_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: the catalog's models."""
    return json_reply({"object": "list", "data": [_model_card(name) for name in MODELS]})


async def get_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{id}`` (the ``openai`` client's ``models.retrieve``): one model, or
    404 ``model_not_found`` as for a request naming a model not served."""
    name = request.match_info["model"]
    if name not in MODELS:
        message = f"The model '{name}' does not exist"
        raise HttpError(404, message, "invalid_request_error", "model_not_found")
    return json_reply(_model_card(name))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``, plain or streamed."""
    emulator = request.app[EMULATOR]
    gateway = emulator.gateway
    admitted = await emulator.admit(request)
    chat = admitted.check(functools.partial(chat_request, typed=gateway.typed))
    verdict = await emulator.inject(request, admitted.stats, chat.stream)
    schema = admitted.check(lambda body, _: response_schema(body))
    if schema is None:
        answer = summarise(chat.model, chat.messages, chat.max_tokens)
    else:
        broken = emulator.config.invalid_json_rate
        answer = structured_summary(
            chat.model, chat.messages, chat.max_tokens, schema, admitted.raw, broken
        )
    head: dict[str, object] = {
        "id": "chatcmpl-" + hashlib.blake2s(admitted.raw, digest_size=12).hexdigest(),
        "created": int(time.time()),
        "model": chat.model.name,
    }
    latency = emulator.config.latency_s
    if chat.stream:
        usage = gateway.usage_place(chat.include_usage)
        lines = event_lines(head, answer, gateway.reasoning_field, usage)
        fault, stopping = verdict.fault, emulator.stopping
        return await send_events(request, lines, fault, latency, stopping, admitted.headers)
    if latency:
        await asyncio.sleep(latency)
    message, finish = gateway.message(answer), answer.finish_reason
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    body = {**head, "object": "chat.completion", "choices": [choice], "usage": usage_json(answer)}
    return json_reply(body, headers=admitted.headers)


async def embeddings(request: web.Request) -> web.Response:
    """``POST /v1/embeddings``: one vector per input string, in order."""
    emulator = request.app[EMULATOR]
    admitted = await emulator.admit(request)
    job = admitted.check(embedding_request)
    await emulator.inject(request, admitted.stats, stream=False)
    if emulator.config.latency_s:
        await asyncio.sleep(emulator.config.latency_s)
    encode = embed_base64 if job.encoding_format == "base64" else embed
    data = [
        {"object": "embedding", "index": i, "embedding": encode(text)}
        for i, text in enumerate(job.inputs)
    ]
    tokens = sum(max(1, count_tokens(text)) for text in job.inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    body = {"object": "list", "data": data, "model": job.model.name, "usage": usage}
    return json_reply(body, headers=admitted.headers)


async def get_stats(request: web.Request) -> web.Response:
    """``GET /stats``: what the emulator saw, per model (shape in :mod:`.stats`);
    ``?times=1`` adds the times of the latest 429s."""
    times = request.query.get("times", "0").lower() not in ("", "0", "false", "no")
    return json_reply(request.app[EMULATOR].stats.as_json(times))


async def reset_stats(request: web.Request) -> web.Response:
    """``POST /stats/reset``: zero the counters; answers the zeroed stats."""
    emulator = request.app[EMULATOR]
    emulator.reset()
    return json_reply(emulator.stats.as_json())


def make_app(
    config: EmulatorConfig | None = None,
    *,
    clock: Clock = time.monotonic,
    wall: Clock = time.time,
) -> web.Application:
    """The emulator as an aiohttp application; ``clock`` drives the sliding windows and stamps
    admissions, ``wall`` places the fixed windows (``EmulatorConfig.window_s`` other than 1)."""
    emulator = Emulator(config or EmulatorConfig(), clock, wall)
    app = web.Application(middlewares=[_guard], client_max_size=64 * 1024**2)
    app[EMULATOR] = emulator

    async def stop_stalls(app: web.Application) -> None:
        emulator.stopping.set()

    app.on_shutdown.append(stop_stalls)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/stats/reset", reset_stats)
    return app
