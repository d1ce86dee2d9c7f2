"""The bundled local SciBox emulator: the service's OpenAI-compatible API on 127.0.0.1.

It serves the catalog's models with their rate limits (scaled by ``rps_scale``), answers
deterministically (an extractive summary for chat, hashed word features for embeddings),
injects seeded faults (500/503, dropped connections, cut and stalled streams, latency spikes)
and reports what it saw at ``GET /stats``, so tests and benchmarks measure pacing at the server.

Modules: ``config`` (EmulatorConfig), ``limits`` (the sliding window), ``faults`` (the seeded
draw), ``answers`` and ``vectors`` (deterministic content), ``payloads`` (request checks),
``streaming`` (SSE), ``stats`` (the counters), ``server`` (routes), ``serving`` (sockets).
"""

from batchrun.emulator.config import EmulatorConfig
from batchrun.emulator.server import make_app
from batchrun.emulator.serving import running_emulator, serve

__all__ = ["EmulatorConfig", "make_app", "running_emulator", "serve"]
