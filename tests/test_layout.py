"""The output directory as readers see it: the result parts and nothing else (every reader
opens it as is), the state beside it, an output of format 2 moved over on first use, and the
state of a deleted output never taken for a new one's."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import orjson
import pandas as pd
import polars as pl
import pytest

import batchrun
from batchrun.output.identity import FORMAT_VERSION
from batchrun.output.layout import OutputLayout, read_json
from batchrun.output.store import Store
from batchrun.report.html import write_report
from tests.support import EMBEDDER, news_chat_job, news_rows, write_jsonl
from tests.support.outputs import SCHEMA, abandon, ids, rows

DIMENSIONS = 1024


def embeddings_job(rows_count: int) -> batchrun.Job:
    write_jsonl(Path("texts.jsonl"), news_rows(rows_count))
    return batchrun.Job.from_dict(
        {
            "kind": "embeddings",
            "model": EMBEDDER,
            "input": {"path": "texts.jsonl"},
            "output": {"path": "out", "keep": ["title"], "part_rows": 7},
        }
    )


def test_every_reader_opens_the_output_directory_as_is(tmp_path: Path) -> None:
    job = embeddings_job(20)
    assert batchrun.run(job, progress=False).ok
    write_report(job)  # the report lands beside the output too
    expected = sorted(row["id"] for row in news_rows(20))

    assert only_parts(Path("out"))
    by_polars = pl.read_parquet("out")
    by_pandas = pd.read_parquet("out", engine="pyarrow")
    sql = duckdb.connect()
    by_glob = sql.execute("select id from read_parquet('out/*.parquet') order by id").fetchall()
    by_dir = sql.execute("select id from read_parquet('out') order by id").fetchall()

    assert sorted(by_polars["id"].to_list()) == expected == sorted(by_pandas["id"])
    assert [row[0] for row in by_glob] == expected == [row[0] for row in by_dir]
    assert by_polars.schema["embedding"] == pl.Array(pl.Float32, DIMENSIONS)
    similar = sql.execute(
        "select min(list_cosine_similarity(embedding, embedding)), "
        "min(array_cosine_similarity(embedding::FLOAT[1024], embedding::FLOAT[1024])) "
        "from read_parquet('out/*.parquet')"
    ).fetchone()
    assert similar is not None and similar == pytest.approx((1.0, 1.0), abs=1e-5)
    assert Path("out.report.html").is_file() and OutputLayout(Path("out")).summary().is_file()


def only_parts(output: Path) -> bool:
    """The parts, and the empty mark of the directory (readers skip empty and dot files)."""
    others = [path for path in output.iterdir() if not path.name.startswith("part-")]
    return (
        len(others) == 1
        and others[0].name.startswith(".batchrun-")
        and not others[0].stat().st_size
    )


def test_hf_datasets_loads_the_output_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    datasets = pytest.importorskip("datasets")
    job = embeddings_job(9)
    assert batchrun.run(job, progress=False).ok

    loaded = datasets.load_dataset("parquet", data_dir="out", cache_dir=str(tmp_path / "cache"))

    assert sorted(loaded["train"]["id"]) == sorted(row["id"] for row in news_rows(9))


def make_it_format_2(output: Path) -> None:
    """What batchrun wrote before the state directory: its files among the parts."""
    layout = OutputLayout(output)
    for path in layout.state.iterdir():
        if path.name in ("_input-index.parquet", "_parts.json"):  # (format 4's own)
            path.unlink()
            continue
        os.replace(path, output / path.name)
    layout.state.rmdir()
    identity = orjson.loads((output / "_job.json").read_bytes())
    (output / "_job.json").write_bytes(orjson.dumps({**identity, "format": 2}))


def test_an_output_of_format_2_is_moved_over_on_first_use() -> None:
    job = embeddings_job(12)
    batchrun.run(job, limit=5, progress=False)
    make_it_format_2(Path("out"))
    assert (Path("out") / "_summary.json").is_file()

    result = batchrun.run(job, progress=False)

    assert (result.rows_skipped, result.rows_ok) == (5, 7)  # nothing sent twice
    assert only_parts(Path("out"))
    assert read_json(OutputLayout(Path("out")).job_file)["format"] == FORMAT_VERSION  # type: ignore[index]
    assert len(OutputLayout(Path("out")).run_records()) == 2  # the first run's record moved
    assert pl.read_parquet("out").height == 12


def test_the_state_of_a_deleted_output_is_not_taken_for_a_new_ones(tmp_path: Path) -> None:
    out = tmp_path / "out"
    killed = Store(out, SCHEMA).open()
    killed.append(rows(0, 3))
    abandon(killed)  # a journal of three rows is left in the state
    shutil.rmtree(out)

    Store(out, SCHEMA).open().close()

    assert ids(out) == []  # the old journal was not sealed into the new output
    (aside,) = tmp_path.glob(".out.batchrun.stale-*")
    assert len(OutputLayout(out).journals()) == 0 and list(aside.glob(".journal-*"))


def test_fresh_moves_the_state_aside_with_the_output() -> None:
    job = news_chat_job(news_rows(3))
    batchrun.run(job, progress=False)

    again = batchrun.run(job, fresh=True, progress=False)

    (old,) = Path(".").glob("out.old-*")
    assert again.rows_ok == 3 and pl.read_parquet(old).height == 3
    assert OutputLayout(old).summary().is_file()
