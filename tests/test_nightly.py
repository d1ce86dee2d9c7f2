"""Nightly runs on a living corpus: only what changed is sent; removed rows are reported and
pruned; a job-level change is a decision (``--fresh`` or ``--redo``)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from batchrun.emulator import EmulatorConfig, running_emulator
from batchrun.errors import OutputError
from batchrun.job.spec import load_job
from batchrun.output.layout import OutputLayout
from batchrun.report.overview import status_lines, validate_lines
from batchrun.runner import RunOptions, run_job
from tests.support import news_rows, write_jsonl
from tests.support.outputs import read_columns
from tests.support.waits import accepted_requests

QUIET = RunOptions(progress=False)
EDITED = [f"n{i:05d}" for i in range(0, 100, 10)]
REMOVED = ["n00001", "n00002", "n00003"]
MODEL = {"chat": "qwen3-32b-awq", "embeddings": "bge-m3"}


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", "test-token")


def living_corpus() -> list[dict[str, Any]]:
    """The next night's input: 10 texts edited, 5 rows added, 3 removed."""
    rows = [row for row in news_rows(200) if row["id"] not in REMOVED]
    for row in rows:
        if row["id"] in EDITED:
            row["text"] = f"Breaking: item {row['id']} was edited overnight. New facts emerged."
    return rows + news_rows(5, start=200)


def output_rows() -> dict[str, dict[str, Any]]:
    table = read_columns(Path("out"), ["id", "status", "model", "request_hash"])
    return {row["id"]: row for row in table.to_pylist()}


@pytest.mark.parametrize("kind", ["chat", "embeddings"])
async def test_a_rerun_sends_only_new_and_edited_rows_and_prunes_removed_ones(
    make_job: Callable[..., Path], kind: str
) -> None:
    async with running_emulator(EmulatorConfig(rps_scale=100)) as url:
        path = make_job(news_rows(200), kind=kind, base_url=url, rps=150, run="batch_size = 1")
        job = load_job(path)
        assert (await run_job(job, QUIET, io.StringIO())).ok
        first = await accepted_requests(url, MODEL[kind])
        write_jsonl(Path("news.jsonl"), living_corpus())
        out = io.StringIO()

        assert (await run_job(load_job(path), QUIET, out)).ok

        assert await accepted_requests(url, MODEL[kind]) - first == 15
    assert "202 rows: 5 new, 10 changed, 187 unchanged, 3 in the output" in out.getvalue()
    status = "\n".join(status_lines(load_job(path)))
    assert "202 rows: 0 new, 0 changed, 202 unchanged, 3 in the output" in status
    rows = output_rows()
    assert len(rows) == 205 and all(row["status"] == "ok" for row in rows.values())


async def test_edited_rows_hold_answers_to_their_new_text(make_job: Callable[..., Path]) -> None:
    async with running_emulator(EmulatorConfig(rps_scale=100)) as url:
        path = make_job(news_rows(200), base_url=url, rps=150)
        assert (await run_job(load_job(path), QUIET, io.StringIO())).ok
        write_jsonl(Path("news.jsonl"), living_corpus())
        assert (await run_job(load_job(path), QUIET, io.StringIO())).ok
    table = read_columns(Path("out"), ["id", "content"]).to_pylist()
    answers = {row["id"]: row["content"] for row in table}
    assert all("edited overnight" in answers[row_id] for row_id in EDITED)
    assert "edited" not in answers["n00011"]


async def test_prune_removes_rows_no_longer_in_the_input(make_job: Callable[..., Path]) -> None:
    async with running_emulator(EmulatorConfig(rps_scale=100)) as url:
        path = make_job(news_rows(200), base_url=url, rps=150)
        assert (await run_job(load_job(path), QUIET, io.StringIO())).ok
        write_jsonl(Path("news.jsonl"), living_corpus())
        out = io.StringIO()
        prune = RunOptions(progress=False, prune=True)
        assert (await run_job(load_job(path), prune, out)).ok
    assert "--prune: removed 3 rows" in out.getvalue()
    rows = output_rows()
    assert len(rows) == 202 and not set(REMOVED) & set(rows)


async def test_a_changed_prompt_is_refused_with_the_count_then_redone_with_redo(
    make_job: Callable[..., Path],
) -> None:
    async with running_emulator(EmulatorConfig(rps_scale=100)) as url:
        path = make_job(news_rows(30), base_url=url, rps=150)
        assert (await run_job(load_job(path), QUIET, io.StringIO())).ok
        before = {row_id: row["request_hash"] for row_id, row in output_rows().items()}
        path.write_text(path.read_text().replace("Summarise:", "Summarise briefly:"))

        with pytest.raises(OutputError, match=r"holds 30 rows .* --redo"):
            await run_job(load_job(path), QUIET, io.StringIO())
        redo = RunOptions(progress=False, redo=True)
        out = io.StringIO()
        assert (await run_job(load_job(path), redo, out)).ok
        sent = await accepted_requests(url, "qwen3-32b-awq")
    assert "30 rows: 0 new, 30 changed, 0 unchanged" in out.getvalue()
    assert sent == 60
    after = output_rows()
    assert set(after) == set(before)
    assert all(after[row_id]["request_hash"] != before[row_id] for row_id in before)


async def test_a_text_repeated_under_a_new_id_costs_no_request(
    make_job: Callable[..., Path],
) -> None:
    async with running_emulator(EmulatorConfig(rps_scale=100)) as url:
        path = make_job(news_rows(20), kind="embeddings", base_url=url, rps=150)
        assert (await run_job(load_job(path), QUIET, io.StringIO())).ok
        sent = await accepted_requests(url, "bge-m3")
        again = [{**row, "id": f"copy-{row['id']}"} for row in news_rows(20)[:4]]
        write_jsonl(Path("news.jsonl"), news_rows(20) + again)

        assert (await run_job(load_job(path), QUIET, io.StringIO())).ok

        assert await accepted_requests(url, "bge-m3") == sent
    vectors = read_columns(Path("out"), ["id", "embedding"]).to_pylist()
    by_id = {row["id"]: row["embedding"] for row in vectors}
    assert all(by_id[f"copy-n{i:05d}"] == by_id[f"n{i:05d}"] for i in range(4))


async def test_an_output_of_an_older_batchrun_is_migrated_and_its_rows_count_as_done(
    make_job: Callable[..., Path],
) -> None:
    async with running_emulator(EmulatorConfig(rps_scale=100)) as url:
        path = make_job(news_rows(10), base_url=url, rps=150)
        assert (await run_job(load_job(path), QUIET, io.StringIO())).ok
        _make_it_format_1(Path("out"))
        sent = await accepted_requests(url, "qwen3-32b-awq")
        out = io.StringIO()

        assert (await run_job(load_job(path), QUIET, out)).ok
        assert await accepted_requests(url, "qwen3-32b-awq") == sent
        assert "10 rows were written before batchrun recorded request hashes" in out.getvalue()
        assert (await run_job(load_job(path), RunOptions(progress=False, redo=True))).ok
        assert await accepted_requests(url, "qwen3-32b-awq") == sent + 10
    rows = output_rows()
    assert len(rows) == 10 and all(row["request_hash"] is not None for row in rows.values())


def _make_it_format_1(output: Path) -> None:
    """What batchrun wrote before request hashes: no such column, format 1 in _job.json."""
    for part in output.glob("part-*.parquet"):
        table = pq.read_table(part)
        pq.write_table(table.drop_columns(["request_hash"]), part)
    job_file = OutputLayout(output).job_file
    identity = orjson.loads(job_file.read_bytes())
    job_file.write_bytes(orjson.dumps({**identity, "format": 1}))


def test_a_row_without_the_template_column_is_reported_not_a_crash(
    make_job: Callable[..., Path],
) -> None:
    path = make_job([{"id": "a", "title": "A", "text": "fine."}, {"id": "b", "title": "no text"}])

    lines, fit = validate_lines(load_job(path))

    assert not fit
    assert any("1 rows cannot be sent" in line and "news.jsonl:2" in line for line in lines)
