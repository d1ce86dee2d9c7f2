"""Shared fixtures: every test works in its own directory with no API key in the environment,
and can start the bundled emulator on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import subprocess
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrun.emulator import EmulatorConfig, running_emulator

JOBS = Path(__file__).resolve().parent.parent / "jobs"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SCIBOX_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def emulator() -> AsyncIterator[str]:
    """The base URL of a fresh emulator with the catalog's limits."""
    async with running_emulator(EmulatorConfig()) as base_url:
        yield base_url


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


def news_rows(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "id": f"n{i:05d}",
            "title": f"Title {i}",
            "text": f"Item {i} happened today. The city council met about item {i}. "
            f"It was sunny. Experts expect more news on {i}.",
        }
        for i in range(start, start + count)
    ]


def write_job(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """A throwaway redis-server on 127.0.0.1, no persistence; can be stopped and restarted on
    the same port (to test a lost connection)."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._command = [
            binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
            "--appendonly", "no", "--dir", str(directory),
        ]  # fmt: skip
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL)
        for _ in range(200):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (.ci/run and `make test` install it with apt)")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()
