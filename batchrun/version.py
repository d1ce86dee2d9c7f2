"""The version of batchrun as installed: ``batchrun --version`` prints it, and every output
records it (``_job.json``, ``_summary.json``), so that an output says which batchrun wrote it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("batchrun")
except PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0+unknown"
WRITTEN_BY = f"batchrun {VERSION}"
