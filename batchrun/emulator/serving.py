"""Running the emulator on a socket: in a test's event loop, or in the foreground for the CLI.

Access logging is off (no line per request) and client disconnects cancel their handler, so a
stalled stream ends with its client. On exit, stalled streams are released before aiohttp
waits for the open handlers, so stopping takes a moment, not a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from batchrun.emulator.config import EmulatorConfig
from batchrun.emulator.counters import Counters
from batchrun.emulator.server import EMULATOR, make_app
from batchrun.job.catalog import MODELS

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
"""Where ``batchrun emulator`` listens unless told (the ``local`` endpoint starts its own, on a
free port)."""
_SHUTDOWN_S = 2.0
"""How long stopping waits for requests still being answered (sleeping latency or spikes)."""


@contextlib.asynccontextmanager
async def running_emulator(
    config: EmulatorConfig | None = None, host: str = DEFAULT_HOST, port: int = 0
) -> AsyncIterator[str]:
    """Serve the emulator on the running loop; yields its base URL ``http://HOST:PORT/v1``.

    ``port=0`` picks a free port. The server stops when the block exits.
    """
    async with _started(make_app(config or EmulatorConfig()), host, port) as url:
        yield url


@contextlib.asynccontextmanager
async def _started(app: web.Application, host: str, port: int) -> AsyncIterator[str]:
    runner = web.AppRunner(
        app, access_log=None, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_S
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield f"http://{host}:{_bound_port(runner, port)}/v1"
    finally:
        await runner.cleanup()


def _bound_port(runner: web.AppRunner, default: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return default


def serve(
    config: EmulatorConfig | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> None:
    """Serve in the foreground until Ctrl-C, then print the stats (``batchrun emulator``)."""
    app = make_app(config or EmulatorConfig())
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(app, host, port))
    print(stats_lines(app[EMULATOR].stats), flush=True)


async def _serve_forever(app: web.Application, host: str, port: int) -> None:
    async with _started(app, host, port) as url:
        print(f"SciBox emulator on {url} (models: {', '.join(MODELS)})", flush=True)
        await asyncio.Event().wait()


def stats_lines(stats: Counters) -> str:
    """One line per model: what it accepted, throttled, rejected and failed on purpose."""
    lines = []
    for name, model in stats.models.items():
        lines.append(
            f"{name}: accepted {model.accepted}, throttled {model.throttled}, "
            f"rejected {model.rejected}, faults {sum(model.fault_kinds.values())}, "
            f"max in window {model.window.peak} (limit {model.window.capacity})"
        )
    lines.append(f"unauthorized {stats.unauthorized}, unknown model {stats.unknown_model}")
    return "\n".join(lines)
