"""The aiohttp application: routes to the files, batches and passthrough, each asking
``auth`` who is calling first; ``/metrics`` and ``/health`` are open (no key, no data of a
client). ``serve`` runs it in the foreground until SIGINT/SIGTERM, then stops every batch's job
as on SIGTERM (what is answered is saved; each resumes at the next start).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
from aiohttp import web

from batchrun.runner import LIMITS_URL_ENV
from batchrun.serve.auth import Keys
from batchrun.serve.batches import Batches
from batchrun.serve.batchjobs import BatchJobs
from batchrun.serve.batchrunner import BatchRunner
from batchrun.serve.config import ServeConfig
from batchrun.serve.fairslots import SharedPacing
from batchrun.serve.files import FileStore, file_object, listing, owned_file, upload
from batchrun.serve.metrics import metrics_text
from batchrun.serve.problems import Problem, openai_errors
from batchrun.serve.state import State
from batchrun.serve.upstream import Passthrough, opened

log = logging.getLogger("batchrun.serve")
MB = 1_000_000


@dataclass(frozen=True)
class Server:
    """Everything a route needs."""

    keys: Keys
    store: FileStore
    batches: Batches
    runner: BatchRunner
    passthrough: Passthrough


SERVER = web.AppKey("server", Server)


def routes(app: web.Application) -> None:
    add = app.router.add_route
    add("POST", "/v1/files", _upload)
    add("GET", "/v1/files", _files)
    add("GET", "/v1/files/{id}", _file)
    add("GET", "/v1/files/{id}/content", _content)
    add("DELETE", "/v1/files/{id}", _delete)
    add("POST", "/v1/batches", _create)
    add("GET", "/v1/batches", _batches)
    add("GET", "/v1/batches/{id}", _batch)
    add("POST", "/v1/batches/{id}/cancel", _cancel)
    add("GET", "/v1/models", _models)
    add("POST", "/v1/chat/completions", _chat)
    add("POST", "/v1/embeddings", _embeddings)
    add("GET", "/metrics", _metrics)
    add("GET", "/health", _health)


def _who(request: web.Request) -> tuple[Server, str]:
    server = request.app[SERVER]
    return server, server.keys.owner(request)


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def _upload(request: web.Request) -> web.Response:
    server, owner = _who(request)
    return _json(file_object(await upload(server.store, request, owner)))


async def _files(request: web.Request) -> web.Response:
    server, owner = _who(request)
    return _json(listing(server.store, request.query, owner))


async def _file(request: web.Request) -> web.Response:
    server, owner = _who(request)
    return _json(file_object(owned_file(server.store, request.match_info["id"], owner)))


async def _content(request: web.Request) -> web.StreamResponse:
    server, owner = _who(request)
    row = owned_file(server.store, request.match_info["id"], owner)
    headers = {"Content-Type": "application/octet-stream"}
    return web.FileResponse(server.store.path(row.id), headers=headers)


async def _delete(request: web.Request) -> web.Response:
    server, owner = _who(request)
    row = owned_file(server.store, request.match_info["id"], owner)
    server.store.remove(row)
    return _json({"id": row.id, "object": "file", "deleted": True})


async def _body(request: web.Request) -> object:
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise Problem(400, "The request body is not valid JSON.") from None


async def _create(request: web.Request) -> web.Response:
    server, owner = _who(request)
    row = server.batches.create(await _body(request), owner)
    return _json(server.batches.object(row))


async def _batches(request: web.Request) -> web.Response:
    server, owner = _who(request)
    return _json(server.batches.listing(request.query, owner))


async def _batch(request: web.Request) -> web.Response:
    server, owner = _who(request)
    return _json(server.batches.object(server.batches.get(request.match_info["id"], owner)))


async def _cancel(request: web.Request) -> web.Response:
    server, owner = _who(request)
    return _json(server.batches.object(server.batches.cancel(request.match_info["id"], owner)))


async def _models(request: web.Request) -> web.StreamResponse:
    server, _ = _who(request)
    return await server.passthrough.get(request, "/models")


async def _chat(request: web.Request) -> web.StreamResponse:
    server, _ = _who(request)
    return await server.passthrough.post(request, "/chat/completions")


async def _embeddings(request: web.Request) -> web.StreamResponse:
    server, _ = _who(request)
    return await server.passthrough.post(request, "/embeddings")


async def _metrics(request: web.Request) -> web.Response:
    text = metrics_text(request.app[SERVER].runner.running())
    return web.Response(body=text, content_type="text/plain", charset="utf-8")


async def _health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


@contextlib.asynccontextmanager
async def assembled(config: ServeConfig, keys: Keys) -> AsyncIterator[web.Application]:
    """The application and the batch runner, over the state directory and the upstream."""
    config.state.mkdir(parents=True, exist_ok=True)
    state = State(config.state / "state.sqlite3")
    store = FileStore(config.state / "files", state, int(config.batches.max_file_mb * MB))
    jobs = BatchJobs(config.state / "batches", config, store)
    try:
        async with (
            opened(config.endpoint, config.run.timeout_s) as upstream,
            pacing(config) as shared,
        ):
            runner = BatchRunner(
                state, jobs, upstream, shared, max_running=config.batches.max_running,
                rates=config.rates,
            )  # fmt: skip
            batches = Batches(state, store, jobs, runner, config.batches.window_s)
            passthrough = Passthrough(upstream, shared, config.rates)
            app = web.Application(
                middlewares=[openai_errors], client_max_size=int(config.batches.max_body_mb * MB)
            )
            app[SERVER] = Server(keys, store, batches, runner, passthrough)
            routes(app)
            yield app
    finally:
        state.close()


@contextlib.asynccontextmanager
async def pacing(config: ServeConfig) -> AsyncIterator[SharedPacing]:
    """Each model's shared slots: in this process, or from the team's Redis limiter (for the
    passthrough, in this loop; each batch's job draws from it with a client of its own)."""
    url = os.environ.get(LIMITS_URL_ENV) or config.limits.shared  # (as for `batchrun run`)
    if not url:
        yield SharedPacing()
        return
    from batchrun.send.teampacing import TeamLimiter, TeamSlots, default_workspace

    workspace = config.limits.workspace or default_workspace(config.endpoint.base_url)
    limiter = TeamLimiter(url, workspace)
    try:
        await limiter.check()
        yield SharedPacing(source=lambda model: TeamSlots(model, limiter))
    finally:
        await limiter.close()


async def serve(config: ServeConfig, keys: Keys, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM; then stop the batches' jobs, saving what is answered."""
    async with assembled(config, keys) as app:
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            bound = next((a[1] for a in runner.addresses if isinstance(a, tuple)), port)
            print(f"batchrun serve on http://{host}:{bound}/v1 (state: {config.state})", flush=True)
            batch_runner = app[SERVER].runner
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, batch_runner.shutdown)
            await batch_runner.run()
        finally:
            await runner.cleanup()
