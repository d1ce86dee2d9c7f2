"""Figures with the limit lifted (the emulator at a huge ``--rps-scale``, the job at a huge
``rps``), where only the runner's own cost bounds it: chat rows/s and embedding texts/s end to
end, CPU seconds per 1,000 rows; then resuming over a million done rows, and peak memory over
a ten-million-row input.

These sections use the CPU: the bench runs them one at a time, after the paced ones.
"""

from __future__ import annotations

from pathlib import Path

from batchrun.bench.data import (
    MODEL_OF,
    NEWS,
    PASSAGE,
    SHORT,
    output_of,
    write_done_parts,
    write_job,
    write_rows,
)
from batchrun.bench.processes import Emulator, Run, run_batchrun
from batchrun.bench.table import Figure, Spec
from batchrun.bench.workspace import Workspace
from batchrun.job.catalog import Kind
from batchrun.output.catalogue import Catalogue
from batchrun.output.done import Engine, losers

LIFTED = 1_000_000.0
BATCH = 64

LIFTED_SPECS = (
    Spec("lifted [2]: chat rows/s end to end", "rows/s", 2_000),
    Spec("lifted: chat CPU s per 1,000 rows", "s"),
    Spec("lifted: embedding texts/s end to end", "texts/s", 20_000),
    Spec("lifted: embedding CPU s per 1,000 texts", "s"),
)
RESUME_SPECS = (
    Spec("resume: start to first request", "s", 5.0, at_most=True),
    Spec("resume: peak RSS", "MB", 400.0, at_most=True),
    Spec("resume: peak RSS, embeddings job", "MB", 400.0, at_most=True),
    Spec("nightly: changed rows sent, output compacted: peak RSS", "MB", 400.0, at_most=True),
    Spec("nightly: changed rows sent, output compacted: wall", "s", 30.0, at_most=True),
    Spec("grown: input grew by 50,000 rows: start to first request", "s", 30.0, at_most=True),
    Spec("grown: peak RSS, the same run", "MB", 400.0, at_most=True),
)
GROWN_ROWS = 50_000
"""Rows the input gains before the night of section ``resume``'s grown input."""
CHANGED_EVERY = 10_000
"""One done row in this many changed, in the nightly run of section ``resume``."""
MEMORY_SPECS = (Spec("memory: peak RSS, huge JSONL input", "MB", 400, at_most=True),)


def lifted(ws: Workspace) -> list[Figure]:
    """Section ``lifted``: a chat job and an embeddings job as fast as the runner goes, each
    with its own emulator (so its CPU seconds are known too)."""
    work = ws.directory("lifted")
    chat_rows, texts = ws.sizes.lifted_chat_rows, ws.sizes.lifted_texts
    chat_input = write_rows(work / "news.jsonl", chat_rows, NEWS)
    text_input = write_rows(work / "texts.jsonl", texts, PASSAGE)
    ws.say(f"lifted: chat, {chat_rows:,} rows, limit lifted")
    chat, chat_server = _run_lifted(work / "chat.toml", "chat", chat_input)
    ws.say(f"lifted: embeddings, {texts:,} texts, batch {BATCH}, limit lifted")
    embed, embed_server = _run_lifted(work / "embed.toml", "embeddings", text_input)
    return [
        Figure(LIFTED_SPECS[0], chat_rows / chat.wall_s, _cost_note(chat, chat_rows, chat_server)),
        Figure(LIFTED_SPECS[1], 1000 * chat.cpu_s / chat_rows, "runner process only"),
        Figure(LIFTED_SPECS[2], texts / embed.wall_s, _cost_note(embed, texts, embed_server)),
        Figure(LIFTED_SPECS[3], 1000 * embed.cpu_s / texts, "runner process only"),
    ]


RUN_SETTINGS: dict[Kind, dict[str, int]] = {"chat": {}, "embeddings": {"batch_size": BATCH}}


def _run_lifted(job: Path, kind: Kind, data: Path) -> tuple[Run, float]:
    """The run, and the CPU seconds its emulator used."""
    run = RUN_SETTINGS[kind]
    with Emulator(job.parent, rps_scale=LIFTED, name=f"emulator-{job.stem}") as emulator:
        write_job(job, kind=kind, base_url=emulator.base_url, input_path=data, rps=LIFTED, run=run)
        done = run_batchrun(job)
    return done, emulator.cpu_s


def _cost_note(run: Run, rows: int, server_cpu_s: float) -> str:
    return (
        f"{rows:,} in {run.wall_s:.1f} s wall (process start included); CPU s: runner "
        f"{run.cpu_s:.1f}, emulator {server_cpu_s:.1f}; runner peak RSS {run.peak_rss_mb:.0f} MB"
    )


def resume(ws: Workspace) -> list[Figure]:
    """Section ``resume``: the output already holds all but the last rows; ``--limit 1``: a
    chat job, then an embeddings job (which also looks for answers to reuse across ids); then
    a night where one done row in 10,000 changed: those are sent (limit lifted) and the
    output compacted."""
    work = ws.directory("resume")
    done, left = ws.sizes.resume_done, ws.sizes.resume_left
    ws.say(f"resume: writing {done + left:,} input rows")
    data = write_rows(work / "news.jsonl", done + left, NEWS)
    chat, first = _resumed(ws, work / "resume.toml", "chat", data)
    embeddings, _ = _resumed(ws, work / "resume-embeddings.toml", "embeddings", data)
    nightly, changed = _nightly(ws, work / "nightly.toml", data)
    grown, grown_first = _grown(ws, work / "grown.toml", data)
    note = f"{done:,} done of {done + left:,}; run wall {chat.wall_s:.1f} s, "
    note += f"peak RSS {chat.peak_rss_mb:.0f} MB{chat.reruns}"
    return [
        Figure(RESUME_SPECS[0], first, note),
        Figure(RESUME_SPECS[1], chat.peak_rss_mb, f"--limit 1 over {done:,} done rows"),
        Figure(
            RESUME_SPECS[2],
            embeddings.peak_rss_mb,
            f"--limit 1 over {done:,} done texts{embeddings.reruns}",
        ),
        Figure(
            RESUME_SPECS[3],
            nightly.peak_rss_mb,
            f"{changed:,} of {done:,} done rows changed; run wall {nightly.wall_s:.1f} s"
            f"{nightly.reruns}",
        ),
        Figure(RESUME_SPECS[4], nightly.wall_s, f"{changed:,} of {done:,} done rows changed"),
        Figure(RESUME_SPECS[5], grown_first, f"{done:,} done; the index made again"),
        Figure(RESUME_SPECS[6], grown.peak_rss_mb, f"run wall {grown.wall_s:.1f} s{grown.reruns}"),
    ]


def _resumed(ws: Workspace, path: Path, kind: Kind, data: Path) -> tuple[Run, float]:
    """The ``--limit 1`` run over ``resume_done`` done rows, and its seconds from start to
    first request."""
    done = ws.sizes.resume_done
    with Emulator(path.parent, name=f"emulator-{path.stem}") as emulator:
        keep = ("title",) if kind == "chat" else ()
        job = write_job(path, kind=kind, base_url=emulator.base_url, input_path=data, keep=keep)
        ws.say(f"resume ({kind}): the earlier run's input index and {done:,} done rows")
        write_done_parts(job, done)
        ws.say(f"resume ({kind}): run --limit 1 over {done:,} done rows")
        run = run_batchrun(job, "--limit", "1")
        seen = emulator.seen(MODEL_OF[kind])
    if seen.first is None:
        raise ValueError(f"no request reached the emulator (exit {run.code})")
    return run, seen.first - run.spawned_at


def _nightly(ws: Workspace, path: Path, data: Path) -> tuple[Run, int]:
    """The run sending the changed rows of ``resume_done`` done ones (one in
    ``CHANGED_EVERY``), limit lifted, then compacting; and how many changed."""
    done = ws.sizes.resume_done
    changed = -(-done // CHANGED_EVERY)
    with Emulator(path.parent, rps_scale=LIFTED, name=f"emulator-{path.stem}") as emulator:
        job = write_job(path, kind="chat", base_url=emulator.base_url, input_path=data, rps=LIFTED)
        ws.say(f"resume (nightly): {done:,} done rows, {changed:,} of them changed since")
        write_done_parts(job, done, changed_every=CHANGED_EVERY)
        ws.say(f"resume (nightly): run --limit {changed:,}: the changed rows, then compaction")
        run = run_batchrun(job, "--limit", str(changed))
    if run.code != 0:
        raise ValueError(f"the nightly run failed (exit {run.code})")
    with Engine(Catalogue.load(output_of(job))) as engine:
        repeated = bool(losers(engine))
    if repeated:
        raise ValueError("the nightly run left ids with two rows: it did not compact")
    return run, changed


def _grown(ws: Workspace, path: Path, data: Path) -> tuple[Run, float]:
    """The night after the input file gained ``GROWN_ROWS`` rows (appended by the bench to
    the input the done rows' index was made from): ``--limit 1``, and its seconds from start
    to first request (the index is made again first)."""
    done = ws.sizes.resume_done
    with Emulator(path.parent, name=f"emulator-{path.stem}") as emulator:
        job = write_job(path, kind="chat", base_url=emulator.base_url, input_path=data)
        ws.say(f"resume (grown): the earlier run's input index and {done:,} done rows")
        write_done_parts(job, done)
        total = sum(1 for _ in data.open("rb"))
        with data.open("ab") as sink:
            sink.write(b"".join(NEWS % ((i,) * 5) for i in range(total, total + GROWN_ROWS)))
        ws.say(f"resume (grown): the input gained {GROWN_ROWS:,} rows; run --limit 1")
        run = run_batchrun(job, "--limit", "1")
        seen = emulator.seen(MODEL_OF["chat"])
    if seen.first is None:
        raise ValueError(f"no request reached the emulator (exit {run.code})")
    return run, seen.first - run.spawned_at


def memory(ws: Workspace) -> list[Figure]:
    """Section ``memory``: peak RSS of a run over a huge generated input, ``--limit``-ed."""
    work = ws.directory("memory")
    rows, limit = ws.sizes.big_rows, ws.sizes.big_limit
    ws.say(f"memory: writing a {rows:,}-row JSONL input")
    data = work / "big.jsonl"
    try:
        write_rows(data, rows, SHORT)
        with Emulator(work, rps_scale=LIFTED) as emulator:
            job = write_job(
                work / "big.toml",
                kind="chat",
                base_url=emulator.base_url,
                input_path=data,
                rps=LIFTED,
            )
            ws.say(f"memory: run --limit {limit} over {rows:,} rows")
            run = run_batchrun(job, "--limit", str(limit))
    finally:
        data.unlink(missing_ok=True)
    note = f"--limit {limit:,} of {rows:,} rows; wall {run.wall_s:.1f} s, {run.cpu_s:.1f} CPU s"
    return [Figure(MEMORY_SPECS[0], run.peak_rss_mb, note)]
