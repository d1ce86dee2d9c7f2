"""batchrun: large offline LLM jobs on SciBox, paced to its limits, resumable, nothing lost.

Where things go (data flows one way, each stage its own room)::

    job.py ─▶ input/ ──▶ tasks/ ──▶ sender.py ──▶ service/ ──▶ (SciBox)
    the job   read rows   build       pace, call,    client, statuses,
    file      + checks    requests    retry, split   answers, retry,
                          answers ──▶ rows ──▶ output/ (writer, store, parts, compaction)
              scheduler.py wires the stages with bounded queues; indexing.py and diff.py
              say what is left to do; runner.py does one run; overview.py validate/status;
              cli.py argv → exit code

- a new request kind: a module in ``tasks/`` registered in ``tasks.TASKS``
- a new input format: ``input/`` (readers, whole-input checks)
- a new status rule: one line in ``service/statuses.py``
- a new file in the output directory: its name in ``output/layout.py``; a change of the
  output's format: a step in ``output/identity.MIGRATIONS``
- a new job-file key: ``job.py`` (validated once, frozen; rules across keys and the
  messages in ``jobchecks.py``)
- structured answers (a JSON Schema → the request, typed columns, validation):
  ``answerschema.py``

Imports run one way: ``errors``, ``job`` (with ``jobchecks`` and ``answerschema``), ``shards``,
``hashing``, ``clock``, ``stats`` and ``progress`` are the foundation every package may use;
``input/`` and ``output/`` never import each other; ``tasks/`` uses input, output and service;
``sender``, ``scheduler``, ``indexing``, ``diff``, ``endpoint``, ``runner``, ``overview`` and
``cli`` sit on top and nothing below imports them. ``emulator/`` is a separate service sharing
only ``service.catalog``, ``clock`` and ``answerschema.inline_refs``; ``bench/`` is ``make
bench`` and not in the wheel. ``api`` (``run``, ``read``) is the Python API on top of
``runner``; ``export`` writes the output in other formats.
"""

import importlib
import os
from typing import TYPE_CHECKING, Any

# Freed memory goes back to the system at once: Arrow's allocator (mimalloc) and polars'
# (jemalloc) otherwise keep freed pages for a while, and a run's peak RSS holds what each
# kept (a 200,000-text embeddings run: 403 MB, 356 MB with these). They are read when the
# libraries load, so here, before any of them; a value set by the user wins.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")

from batchrun.errors import (
    ApiError,
    BatchrunError,
    FatalError,
    JobError,
    OutputError,
    RetryableError,
    RowError,
)
from batchrun.version import VERSION as __version__  # noqa: F401 (the usual attribute)

if TYPE_CHECKING:
    from batchrun.api import RunResult, arun, read, run
    from batchrun.job import Job, load_job

_LAZY = {
    "RunResult": "api",
    "arun": "api",
    "read": "api",
    "run": "api",
    "Job": "job",
    "load_job": "job",
}


def __getattr__(name: str) -> Any:
    """The engine (``run``, ``arun``, ``read``, ``RunResult``) and the job model (``Job``,
    ``load_job``: pydantic) load on first use, so that ``import batchrun`` and the command's
    start stay quick, and a Ctrl-C while they load is the command's to handle."""
    if name in _LAZY:
        module = importlib.import_module(f"batchrun.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'batchrun' has no attribute {name!r}")


__all__ = [
    "ApiError",
    "BatchrunError",
    "FatalError",
    "Job",
    "JobError",
    "OutputError",
    "RetryableError",
    "RowError",
    "RunResult",
    "arun",
    "load_job",
    "read",
    "run",
]
