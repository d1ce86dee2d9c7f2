"""batchrun: large offline LLM jobs on SciBox, paced to its limits, resumable, nothing lost.

A row's path, one folder per stage (each ``__init__`` says what it takes and gives)::

    job/ ──▶ input/ ──▶ plan/ ──▶ tasks/ ──▶ send/ ──▶ service/ ──▶ (SciBox)
    the job  rows,      what is   requests   paced,     client,
    file,    the input  left to   and their  retried,   answers
    checked  index      do        answers    in order   checked
                                     └──▶ rows ──▶ output/ ──▶ report/
                                                   parts,      status, html,
                                                   store       export, metrics

At the top: ``runner`` (one run, wiring the stages), ``api`` (``run``, ``read``), ``cli``
(argv → exit code), and the base every stage may use: ``errors``, ``version``, ``clock``.
Beside the path: ``emulator/`` (the bundled SciBox emulator), ``serve/`` (``batchrun serve``)
and ``bench/`` (``make bench``).

Imports run one way, in this order (each stage imports only itself, the stages before it
and the base; none imports ``runner``, ``api``, ``cli``, ``serve/`` or ``bench/``;
``tests/test_stages.py`` keeps the rule):

    job/ → emulator/ → service/ → output/ → input/ → tasks/ → plan/ → send/ → report/

- a new request kind: a module in ``tasks/`` registered in ``tasks.TASKS``
- a new input format: ``input/`` (readers, whole-input checks)
- a new status rule: one line in ``service/statuses.py``
- a new file in the output directory: its name in ``output/layout.py``; a change of the
  output's format: a step in ``output/identity.MIGRATIONS``
- a new job-file key: ``job/spec.py`` (validated once, frozen; rules across keys and the
  messages in ``job/checks.py``)
- structured answers (a JSON Schema → the request, typed columns, validation):
  ``job/answerschema.py``
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
    from batchrun.job.spec import Job, load_job

_LAZY = {
    "RunResult": "api",
    "arun": "api",
    "read": "api",
    "run": "api",
    "Job": "job.spec",
    "load_job": "job.spec",
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
