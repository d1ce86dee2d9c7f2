"""A hostile service's answers are checked, never written as another row's answer: embeddings
with repeated indexes or malformed usage, chat answers with ``content: null``. Each against a
few-line fake service on 127.0.0.1."""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from batchrun.job.spec import load_job
from batchrun.runner import RunOptions, run_job
from tests.support import news_rows
from tests.support.outputs import read_columns

QUIET = RunOptions(progress=False)
Answer = Callable[[dict[str, Any], int], dict[str, Any]]


def vector_of(text: str) -> list[float]:
    """The fake service's vector of ``text``: its CRC in the first of 1024 numbers."""
    return [float(zlib.crc32(text.encode()) % 100_000), *[0.0] * 1023]


def every_index_zero(body: dict[str, Any], call: int) -> dict[str, Any]:
    """Vectors in reverse order, each labelled index 0; usage that is not a number."""
    data = [{"index": 0, "embedding": vector_of(t)} for t in reversed(body["input"])]
    return {"data": data, "usage": {"prompt_tokens": "lots"}}


def hostile_once(body: dict[str, Any], call: int) -> dict[str, Any]:
    """The first answer shuffled, every later one as OpenAI's (negative usage, though)."""
    if call == 0:
        return every_index_zero(body, call)
    data = [{"index": i, "embedding": vector_of(t)} for i, t in enumerate(body["input"])]
    return {"data": data, "usage": {"prompt_tokens": -100}}


async def serve(answer: Answer) -> TestServer:
    calls = 0

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "bge-m3"}]})

    async def embeddings(request: web.Request) -> web.Response:
        nonlocal calls
        body = await request.json()
        calls += 1
        return web.json_response({"object": "list", **answer(body, calls - 1)})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/embeddings", embeddings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def run_against(answer: Answer, make_job: Callable[..., Path]) -> list[dict[str, Any]]:
    server = await serve(answer)
    try:
        url = str(server.make_url("/v1"))
        job = load_job(make_job(kind="embeddings", base_url=url, rps=200, run="max_attempts = 2"))
        await run_job(job, QUIET, io.StringIO())
    finally:
        await server.close()
    rows: list[dict[str, Any]] = read_columns(
        Path("out"), ["id", "status", "error", "embedding", "prompt_tokens"]
    ).to_pylist()
    assert sorted(row["id"] for row in rows) == [row["id"] for row in news_rows(20)]
    return rows


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", "test-token")


async def test_vectors_with_repeated_indexes_are_never_written_ok(
    make_job: Callable[..., Path],
) -> None:
    rows = await run_against(every_index_zero, make_job)

    assert {row["status"] for row in rows} == {"failed"}
    assert all("not each of 0..19 once" in row["error"] for row in rows)


async def test_after_a_shuffled_answer_each_row_gets_its_own_vector(
    make_job: Callable[..., Path],
) -> None:
    rows = await run_against(hostile_once, make_job)

    texts = {row["id"]: row["text"] for row in news_rows(20)}
    assert {row["status"] for row in rows} == {"ok"}
    assert all(row["embedding"] == vector_of(texts[row["id"]]) for row in rows)
    assert {row["prompt_tokens"] for row in rows} == {None}
