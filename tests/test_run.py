"""``run_job`` end to end against the real emulator on 127.0.0.1: output rows, pacing measured
at the server, resume, faults, fatal answers."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from batchrun.emulator import EmulatorConfig, running_emulator
from batchrun.errors import FatalError
from batchrun.job.spec import load_job
from batchrun.output.layout import OutputLayout, read_json
from batchrun.runner import RunOptions, run_job
from tests.support import news_rows
from tests.support.outputs import read_columns

QUIET = RunOptions(progress=False)


async def server_stats(base_url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/../stats") as reply:
        stats: dict[str, Any] = await reply.json()
    return stats


def output_rows(path: str = "out") -> dict[str, dict[str, Any]]:
    table = read_columns(Path(path), ["id", "status", "content", "reasoning", "attempts", "model"])
    rows = table.to_pylist()
    assert len(rows) == len({row["id"] for row in rows}), "an id is in the output twice"
    return {row["id"]: row for row in rows}


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", "test-token")


async def test_chat_job_writes_one_ok_row_per_input_row(make_job: Callable[..., Path]) -> None:
    async with running_emulator(EmulatorConfig(rps_scale=20)) as url:
        job = load_job(make_job(base_url=url, rps=40))
        assert (await run_job(job, QUIET, io.StringIO())).ok
    rows = output_rows()
    assert set(rows) == {row["id"] for row in news_rows(20)}
    assert all(row["status"] == "ok" and row["content"] for row in rows.values())
    assert all(
        "<think>" not in row["content"] and row["reasoning"] is None for row in rows.values()
    )
    summary = read_json(OutputLayout(Path("out")).summary()) or {}
    model = summary["models"]["qwen3-32b-awq"]
    assert (model["requests"], model["answered"], summary["rows_ok"]) == (20, 20, 20)
    assert model["prompt_tokens"] > 0 and model["completion_tokens"] > 0


async def test_thinking_answer_is_split_from_content(make_job: Callable[..., Path]) -> None:
    async with running_emulator(EmulatorConfig(rps_scale=20)) as url:
        path = make_job(base_url=url, rps=40)
        path.write_text(path.read_text().replace("/no_think ", ""))
        assert (await run_job(load_job(path), QUIET, io.StringIO())).ok
    rows = output_rows()
    assert all(row["reasoning"] and "<think>" not in row["content"] for row in rows.values())


async def test_pacing_never_exceeds_the_limit_in_any_second(make_job: Callable[..., Path]) -> None:
    async with running_emulator(EmulatorConfig(rps_scale=5)) as url:  # qwen3-32b-awq: 10 RPS
        job = load_job(make_job(news_rows(40), base_url=url, rps=10, run="concurrency = 16"))
        assert (await run_job(job, QUIET, io.StringIO())).ok
        stats = (await server_stats(url))["models"]["qwen3-32b-awq"]
    assert stats["throttled"] == 0
    assert stats["max_in_window"] <= 10
    assert stats["accepted"] == 40


async def test_embeddings_job_packs_rows_and_keeps_order(make_job: Callable[..., Path]) -> None:
    async with running_emulator(EmulatorConfig(rps_scale=20)) as url:
        job = load_job(make_job(kind="embeddings", base_url=url, run="batch_size = 7"))
        assert (await run_job(job, QUIET, io.StringIO())).ok
        stats = (await server_stats(url))["models"]["bge-m3"]
        async with aiohttp.ClientSession() as session:
            texts = [row["text"] for row in news_rows(20)]
            body = {"model": "bge-m3", "input": texts}
            headers = {"Authorization": "Bearer t"}
            async with session.post(f"{url}/embeddings", json=body, headers=headers) as reply:
                expected = [item["embedding"] for item in (await reply.json())["data"]]
    assert stats["accepted"] == 3  # 20 rows in requests of 7
    table = read_columns(Path("out"), ["id", "embedding", "status"]).sort_by("id").to_pylist()
    assert [row["id"] for row in table] == [row["id"] for row in news_rows(20)]
    for row, vector in zip(table, expected, strict=True):
        assert row["embedding"] == pytest.approx(vector, abs=1e-6)


async def test_resume_skips_done_rows_and_finishes_the_rest(make_job: Callable[..., Path]) -> None:
    async with running_emulator(EmulatorConfig(rps_scale=20)) as url:
        job = load_job(make_job(base_url=url, rps=40))
        await run_job(job, RunOptions(limit=7, progress=False), io.StringIO())
        assert len(output_rows()) == 7
        out = io.StringIO()
        assert (await run_job(job, QUIET, out)).ok
        stats = (await server_stats(url))["models"]["qwen3-32b-awq"]
    assert len(output_rows()) == 20
    assert stats["accepted"] == 20  # no row sent twice
    assert "7 already done" in out.getvalue()


async def test_faults_are_retried_and_no_row_is_lost(make_job: Callable[..., Path]) -> None:
    faults = EmulatorConfig(rps_scale=20, fail_rate=0.2, drop_rate=0.1, seed=3)
    async with running_emulator(faults) as url:
        job = load_job(make_job(news_rows(30), base_url=url, rps=40, run="timeout_s = 5"))
        assert (await run_job(job, QUIET, io.StringIO())).ok
    rows = output_rows()
    assert len(rows) == 30
    assert all(row["status"] == "ok" for row in rows.values())
    assert any(row["attempts"] > 1 for row in rows.values())


async def test_streamed_chat_retries_cut_streams(
    make_job: Callable[..., Path],
) -> None:
    faults = EmulatorConfig(rps_scale=20, cut_stream_rate=0.3, seed=5)
    async with running_emulator(faults) as url:
        job = load_job(make_job(base_url=url, rps=40, run="stream = true"))
        assert (await run_job(job, QUIET, io.StringIO())).ok
    streamed = output_rows()
    assert len(streamed) == 20
    assert any(row["attempts"] > 1 for row in streamed.values())
    for row in streamed.values():
        assert row["status"] == "ok"
        assert row["content"].startswith("Item ")  # the extractive summary, whole


async def test_wrong_token_stops_the_run_with_a_fatal_error(
    make_job: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", "tok-wrong-token-0000")
    async with running_emulator(EmulatorConfig(api_key="right", rps_scale=20)) as url:
        job = load_job(make_job(base_url=url, rps=40))
        with pytest.raises(FatalError) as caught:
            await run_job(job, QUIET, io.StringIO())
    assert "SCIBOX_API_KEY" in str(caught.value)
    assert "tok-wrong-token-0000" not in str(caught.value)


async def test_unknown_model_is_fatal_before_any_row(make_job: Callable[..., Path]) -> None:
    async with running_emulator(EmulatorConfig(rps_scale=20)) as url:
        path = make_job(base_url=url, rps=40)
        path.write_text(path.read_text().replace("qwen3-32b-awq", "qwen9-nonexistent"))
        with pytest.raises(FatalError, match="does not serve model = 'qwen9-nonexistent'"):
            await run_job(load_job(path), QUIET, io.StringIO())


async def test_unreachable_endpoint_is_fatal(make_job: Callable[..., Path]) -> None:
    async with running_emulator(EmulatorConfig()) as url:
        pass  # the port is free again: nothing listens there
    job = load_job(make_job(base_url=url, run="timeout_s = 2"))
    with pytest.raises(FatalError, match="cannot reach"):
        await run_job(job, QUIET, io.StringIO())
