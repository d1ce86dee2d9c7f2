"""Shared fixtures: every test works in its own directory with no API key in the environment,
and can start the bundled emulator and a redis-server on 127.0.0.1. Helpers that are not
fixtures live in ``tests/support/``."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from batchrun.bench.redisserver import RedisServer
from batchrun.emulator import EmulatorConfig, running_emulator
from tests.support import news_rows, write_job, write_jsonl

# The property tests draw the same examples on every run, so that a test run (CI's too) never
# fails at random; `make test ARGS="--hypothesis-profile=explore"` draws new ones, to look for
# bugs (each one found becomes a test of its own).
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("repeatable")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SCIBOX_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def emulator() -> AsyncIterator[str]:
    """The base URL of a fresh emulator with the catalog's limits."""
    async with running_emulator(EmulatorConfig()) as base_url:
        yield base_url


@pytest.fixture
def make_job(tmp_path: Path) -> Callable[..., Path]:
    """A chat or embeddings job over ``rows`` written to news.jsonl in the test's directory."""

    def make(
        rows: list[dict[str, Any]] | None = None,
        *,
        kind: str = "chat",
        base_url: str = "local",
        extra: str = "",
        rps: float | None = None,
        run: str = "",
    ) -> Path:
        write_jsonl(tmp_path / "news.jsonl", news_rows(20) if rows is None else rows)
        model = "qwen3-32b-awq" if kind == "chat" else "bge-m3"
        section = (
            '[prompt]\nsystem = "/no_think Be brief."\nuser = "Summarise:\\n\\n{text}"\n'
            if kind == "chat"
            else ""
        )
        models = f'[models."{model}"]\nrps = {rps}\n' if rps else ""
        body = (
            f'kind = "{kind}"\nmodel = "{model}"\n{extra}\n'
            f'[endpoint]\nbase_url = "{base_url}"\n'
            '[input]\npath = "news.jsonl"\n'
            f"{section}"
            '[output]\npath = "out"\nkeep = ["title"]\n'
            "[run]\nbackoff_base_s = 0.05\nbackoff_max_s = 0.5\nserver_error_wait_s = 0.05\n"
            f"{run}\n"
            f"{models}"
        )
        return write_job(tmp_path / "job.toml", body)

    return make


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (.ci/run and `make test` install it with apt)")
    with RedisServer(binary, tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def emulator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where an emulator process of the test keeps its log, outside the test's directory."""
    return tmp_path_factory.mktemp("emulator")
