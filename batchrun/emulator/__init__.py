"""The bundled local SciBox emulator: the service's OpenAI-compatible API on 127.0.0.1.

Takes: HTTP requests on 127.0.0.1 (``batchrun emulator``, or started by ``service.endpoint``
for a job whose ``base_url`` is ``local``) and its ``EmulatorConfig``.
Gives: answers, errors and rate-limit headers as SciBox, vLLM or LiteLLM Proxy give them, and
what it saw at ``GET /stats``.

It serves the catalog's models with their rate limits (scaled by ``rps_scale``; SciBox's
sliding 1-second window, or fixed wall-clock windows of ``window_s`` as LiteLLM counts),
answers deterministically (an extractive summary for chat, hashed word features for
embeddings), shaped as SciBox, vLLM or LiteLLM Proxy answer (``gateway``), injects seeded
faults (500/503, dropped connections, cut and stalled streams, latency spikes) and reports
what it saw at ``GET /stats``, so tests and benchmarks measure pacing at the server.

Modules (named for what they are here, apart from the runner's own): ``config``
(EmulatorConfig), ``limits`` (the sliding and the fixed window), ``gateways`` (how SciBox, vLLM
and LiteLLM shape answers and errors), ``faults`` (the seeded draw), ``summaries`` and
``vectors`` (deterministic content), ``structured`` (answers made to a schema), ``bodies``
(request checks), ``streaming`` (SSE), ``replies`` (JSON replies and the error reply),
``counters`` (what ``/stats`` reports), ``server`` (routes), ``serving`` (sockets). It shares
only the model catalog (``batchrun.job.catalog``), the clock's type (``batchrun.clock``)
and the inlining of a schema's ``$ref`` (``batchrun.job.answerschema.inline_refs``) with the
runner.
"""

from batchrun.emulator.config import EmulatorConfig
from batchrun.emulator.server import make_app
from batchrun.emulator.serving import DEFAULT_HOST, DEFAULT_PORT, running_emulator, serve

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "EmulatorConfig",
    "make_app",
    "running_emulator",
    "serve",
]
