"""Section ``wholerun``: peak memory through a complete run (limit lifted), not just its
start: an embeddings job over a small and a ten times larger corpus, and a chat job over the
larger size. A run whose memory is bounded by ``max_in_flight``, ``batch_size`` and
``part_rows`` peaks the same at both sizes (target: the larger ≤ 1.05 × the smaller, and
≤ 400 MB). Slow: the chat run alone is about 20 minutes at the default sizes.
"""

from __future__ import annotations

from pathlib import Path

from batchrun.bench.data import NEWS, PASSAGE, write_job, write_rows
from batchrun.bench.processes import Emulator, Run, run_batchrun
from batchrun.bench.scale import BATCH, LIFTED
from batchrun.bench.table import Figure, Spec
from batchrun.bench.workspace import Workspace
from batchrun.job.catalog import Kind

RUN_TIMEOUT_S = 3_600.0
SPECS = (
    Spec("whole run: embeddings, peak RSS, larger corpus", "MB", 400, at_most=True),
    Spec("whole run: embeddings, peak RSS larger ÷ smaller", "×", 1.05, at_most=True),
    Spec("whole run: chat, peak RSS, larger input", "MB", 400, at_most=True),
)


def whole_run(ws: Workspace) -> list[Figure]:
    work = ws.directory("wholerun")
    small, large = ws.sizes.whole_small, ws.sizes.whole_large
    embedded = {size: _run(ws, work, "embeddings", size) for size in (small, large)}
    chat = _run(ws, work, "chat", large)
    ratio = embedded[large].peak_rss_mb / embedded[small].peak_rss_mb
    return [
        Figure(SPECS[0], embedded[large].peak_rss_mb, _note(embedded[large], large)),
        Figure(SPECS[1], ratio, f"{embedded[small].peak_rss_mb:.0f} MB at {small:,} texts"),
        Figure(SPECS[2], chat.peak_rss_mb, _note(chat, large)),
    ]


def _run(ws: Workspace, work: Path, kind: Kind, rows: int) -> Run:
    ws.say(f"wholerun: {kind}, {rows:,} rows, limit lifted, to the end")
    data = write_rows(
        work / f"{kind}-{rows}.jsonl", rows, PASSAGE if kind == "embeddings" else NEWS
    )
    settings = {"batch_size": BATCH} if kind == "embeddings" else {}
    try:
        with Emulator(work, rps_scale=LIFTED, name=f"emulator-{kind}-{rows}") as emulator:
            job = write_job(
                work / f"{kind}-{rows}.toml", kind=kind, base_url=emulator.base_url,
                input_path=data, rps=LIFTED, run=settings,
            )  # fmt: skip
            return run_batchrun(job, timeout_s=RUN_TIMEOUT_S)
    finally:
        data.unlink(missing_ok=True)


def _note(run: Run, rows: int) -> str:
    return f"{rows:,} rows to the end in {run.wall_s:.0f} s, {run.cpu_s:.0f} CPU s"
