"""The scheduler against a scripted fake service: retries, give-ups, row errors, fatal stops,
bisection of rejected embedding batches. No real sleeping: the sleep is injected."""

from __future__ import annotations

import io
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchrun.errors import FatalError, RetryableError, RowError
from batchrun.job.spec import Job, load_job
from batchrun.send.progress import Progress
from batchrun.send.stats import RunStats
from batchrun.service.answers import ChatAnswer, EmbeddingAnswer
from tests.support import news_rows
from tests.support.fakeservice import FakeService, Script, Sleeps, run_fake
from tests.support.outputs import read_columns


def ok_chat(model: str, body: dict[str, Any], call: int) -> ChatAnswer:
    return ChatAnswer("summary of " + body["messages"][-1]["content"][-12:], None, "stop", 5, 3)


@pytest.fixture
def chat_job(make_job: Callable[..., Path]) -> Job:
    return load_job(make_job(rps=1000, run="max_attempts = 3"))


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_retryable_status_is_retried_then_row_succeeds(chat_job: Job, status: int) -> None:
    failing = {"n00003"}

    def script(model: str, body: dict[str, Any], call: int) -> Any:
        text = body["messages"][-1]["content"]
        if "Item 3 happened" in text and failing:
            failing.clear()
            return RetryableError(f"{status} from server", status)
        return ok_chat(model, body, call)

    table = await run_fake(chat_job, FakeService(script))
    rows = {row["id"]: row for row in table.to_pylist()}
    assert len(rows) == 20
    assert all(row["status"] == "ok" for row in rows.values())
    assert rows["n00003"]["attempts"] == 2
    assert rows["n00004"]["attempts"] == 1


async def test_retry_after_is_honoured(chat_job: Job) -> None:
    def script(model: str, body: dict[str, Any], call: int) -> Any:
        return (
            RetryableError("429", 429, retry_after=0.25) if call == 1 else ok_chat(model, body, 1)
        )

    sleeps = Sleeps()
    await run_fake(chat_job, FakeService(script), sleeps)  # (backoff_max_s = 0.5)
    assert sleeps.delays == [0.25]


async def test_a_retry_after_of_an_hour_waits_backoff_max_s_and_says_why(
    make_job: Callable[..., Path],
) -> None:
    job = make_job(rps=1000)
    job.write_text(job.read_text().replace("backoff_max_s = 0.5", "backoff_max_s = 30"))

    def script(model: str, body: dict[str, Any], call: int) -> Any:
        return (
            RetryableError("429", 429, retry_after=3600) if call == 1 else ok_chat(model, body, 1)
        )

    sleeps, stats, lines = Sleeps(), RunStats(), io.StringIO()
    progress = Progress(stats, lines, enabled=False, clock=lambda: 1_800_000_000.0)
    await run_fake(load_job(job), FakeService(script), sleeps, on_wait=progress.waiting)

    until = time.strftime("%H:%M:%S", time.localtime(1_800_000_030.0))
    why = "the service asked for 3600 s (Retry-After); [run].backoff_max_s = 30 caps it"
    assert sleeps.delays == [30.0]
    assert lines.getvalue() == f"qwen3-32b-awq: waiting 30 s, until {until}: {why}\n"
    assert stats.notice == f"qwen3-32b-awq waits until {until}: {why}"


async def test_row_fails_after_max_attempts_and_run_goes_on(chat_job: Job) -> None:
    def script(model: str, body: dict[str, Any], call: int) -> Any:
        if "Item 7 happened" in body["messages"][-1]["content"]:
            return RetryableError("503 from server", 503)
        return ok_chat(model, body, call)

    table = await run_fake(chat_job, FakeService(script))
    rows = {row["id"]: row for row in table.to_pylist()}
    assert rows["n00007"]["status"] == "failed"
    assert rows["n00007"]["attempts"] == 3
    assert "gave up after 3 attempts" in rows["n00007"]["error"]
    assert sum(row["status"] == "ok" for row in rows.values()) == 19


async def test_bad_request_fails_only_its_row_without_retry(chat_job: Job) -> None:
    def script(model: str, body: dict[str, Any], call: int) -> Any:
        if "Item 2 happened" in body["messages"][-1]["content"]:
            return RowError("400 bad request: too long", 400)
        return ok_chat(model, body, call)

    service = FakeService(script)
    table = await run_fake(chat_job, service)
    rows = {row["id"]: row for row in table.to_pylist()}
    assert rows["n00002"]["status"] == "failed"
    assert rows["n00002"]["attempts"] == 1
    assert "too long" in rows["n00002"]["error"]
    assert len(service.calls) == 20


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_fatal_status_stops_the_run_and_keeps_done_rows(
    make_job: Callable[..., Path], status: int
) -> None:
    job = load_job(make_job(rps=1000, run="concurrency = 1"))

    def script(model: str, body: dict[str, Any], call: int) -> Any:
        return FatalError(f"{status} fix it", status) if call > 5 else ok_chat(model, body, call)

    service = FakeService(script)
    with pytest.raises(FatalError, match=str(status)):
        await run_fake(job, service)
    done = read_columns(Path("out"), ["id", "status"]).to_pylist()
    assert len(done) == 5
    assert {row["status"] for row in done} == {"ok"}
    assert len(service.calls) == 6  # nothing sent after the fatal answer


async def test_empty_text_fails_without_a_request(make_job: Callable[..., Path]) -> None:
    rows: list[dict[str, str | None]] = [{"id": "a", "title": "t", "text": "fine text"}]
    rows += [{"id": "b", "title": "t", "text": " "}, {"id": "c", "title": "t", "text": None}]
    service = FakeService(ok_chat)
    table = await run_fake(load_job(make_job(rows, rps=1000)), service)
    by_id = {row["id"]: row for row in table.to_pylist()}
    assert by_id["a"]["status"] == "ok"
    assert by_id["b"]["status"] == by_id["c"]["status"] == "failed"
    assert "empty" in by_id["b"]["error"]
    assert len(service.calls) == 1


def vector_for(text: str) -> bytes:
    return array("f", [float(len(text)), float(sum(map(ord, text)) % 997)] * 512).tobytes()


def embed_script(bad: set[str]) -> Script:
    def script(model: str, body: dict[str, Any], call: int) -> Any:
        texts = body["input"]
        if bad & set(texts):
            return RowError("400 bad request: input rejected", 400)
        return EmbeddingAnswer([vector_for(t) for t in texts], 10 * len(texts))

    return script


async def test_embeddings_are_packed_and_each_vector_lands_on_its_row(
    make_job: Callable[..., Path],
) -> None:
    job = load_job(make_job(kind="embeddings", rps=1000, run="batch_size = 8"))
    service = FakeService(embed_script(set()))
    table = await run_fake(job, service)
    assert [len(call["input"]) for call in service.calls] == [8, 8, 4]
    texts = {row["id"]: row["text"] for row in _news(20)}
    for row in table.to_pylist():
        assert row["embedding"][:2] == list(array("f", vector_for(texts[row["id"]])))[:2]
        assert row["prompt_tokens"] > 0


async def test_rejected_embedding_batch_is_bisected_to_the_bad_input(
    make_job: Callable[..., Path],
) -> None:
    job = load_job(make_job(kind="embeddings", rps=1000, run="batch_size = 8"))
    bad_text = _news(20)[5]["text"]
    table = await run_fake(job, FakeService(embed_script({bad_text})))
    by_id = {row["id"]: row for row in table.to_pylist()}
    assert by_id["n00005"]["status"] == "failed"
    assert by_id["n00005"]["embedding"] is None
    assert all(row["status"] == "ok" for key, row in by_id.items() if key != "n00005")


def _news(count: int) -> list[dict[str, Any]]:
    return news_rows(count)


async def test_vector_of_the_wrong_size_fails_its_row(make_job: Callable[..., Path]) -> None:
    job = load_job(make_job(kind="embeddings", rps=1000, run="batch_size = 8"))

    def script(model: str, body: dict[str, Any], call: int) -> Any:
        return EmbeddingAnswer([array("f", [0.5, 0.5]).tobytes() for _ in body["input"]], 1)

    table = await run_fake(job, FakeService(script))
    assert set(table.column("status").to_pylist()) == {"failed"}
    assert "1024" in table.column("error")[0].as_py()


async def test_a_model_pool_spreads_rows_over_its_models(make_job: Callable[..., Path]) -> None:
    pool = 'model = ["qwen3-32b-awq", "qwen3-coder-30b-a3b-instruct-fp8"]'
    path = make_job(news_rows(40))
    path.write_text(path.read_text().replace('model = "qwen3-32b-awq"', pool))
    path.write_text(path.read_text() + '[models."qwen3-coder-30b-a3b-instruct-fp8"]\nrps = 50\n')
    path.write_text(path.read_text() + '[models."qwen3-32b-awq"]\nrps = 50\n')
    table = await run_fake(load_job(path), FakeService(ok_chat))
    used = table.column("model").to_pylist()
    assert 15 <= used.count("qwen3-32b-awq") <= 25
    assert used.count("qwen3-32b-awq") + used.count("qwen3-coder-30b-a3b-instruct-fp8") == 40


async def test_rows_move_to_the_fallback_model_after_repeated_5xx(
    make_job: Callable[..., Path],
) -> None:
    fallback = 'fallback_model = "qwen3-coder-30b-a3b-instruct-fp8"\nfallback_after = 2'
    job = load_job(make_job(news_rows(5), rps=1000, run=f"max_attempts = 5\n{fallback}"))

    def script(model: str, body: dict[str, Any], call: int) -> Any:
        if model == "qwen3-32b-awq":
            return RetryableError("503 from server", 503)
        return ok_chat(model, body, call)

    table = await run_fake(job, FakeService(script))
    assert set(table.column("model").to_pylist()) == {"qwen3-coder-30b-a3b-instruct-fp8"}
    assert set(table.column("status").to_pylist()) == {"ok"}
    assert set(table.column("attempts").to_pylist()) == {3}


async def test_duplicate_texts_cost_one_request_and_each_row_gets_the_vector(
    make_job: Callable[..., Path],
) -> None:
    rows = news_rows(6)
    rows += [{**rows[1], "id": "copy-1"}, {**rows[1], "id": "copy-2"}, {**rows[4], "id": "copy-4"}]
    job = load_job(make_job(rows, kind="embeddings", rps=1000, run="batch_size = 4"))
    service = FakeService(embed_script(set()))
    table = await run_fake(job, service)
    assert sum(len(call["input"]) for call in service.calls) == 6
    by_id = {row["id"]: row for row in table.to_pylist()}
    assert len(by_id) == 9
    assert (
        by_id["copy-1"]["embedding"] == by_id["copy-2"]["embedding"] == by_id["n00001"]["embedding"]
    )
    assert by_id["copy-4"]["embedding"] == by_id["n00004"]["embedding"]
    assert by_id["copy-1"]["status"] == "ok"
