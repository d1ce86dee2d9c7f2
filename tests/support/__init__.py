"""What the tests share besides fixtures: news rows and the files that hold them, job files,
and the ``batchrun`` command run as a child process with the tests' token. The emulator and
redis-server processes come from the bench: ``batchrun.bench.processes.Emulator`` and
``batchrun.bench.redisserver.RedisServer``.

Beside this module, one module per idea: ``fakeservice`` (a scripted service and the pipeline
run against it), ``outputs`` (an output written through the store by hand), ``waits`` (moments
in a child's run to act at, instead of fixed sleeps). A test module imports from here, never
from another test module."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from batchrun.job.spec import Job

JOBS = Path(__file__).resolve().parents[2] / "jobs"
KEY = "tok-test-cli-key-4242"
"""The token the ``batchrun`` children get in SCIBOX_API_KEY."""
FINISH_TIMEOUT_S = 120


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


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


def news_chat_job(rows: list[dict[str, Any]], user: str = "{text}") -> Job:
    """A chat job over ``rows`` (written to news.jsonl here) into ``out``, paced at 50 RPS."""
    write_jsonl(Path("news.jsonl"), rows)
    return Job.from_dict(
        {
            "kind": "chat",
            "model": THINKER,
            "input": {"path": "news.jsonl"},
            "prompt": {"system": "/no_think Be brief.", "user": user},
            "output": {"path": "out"},
            "models": {THINKER: {"rps": 50}},
        }
    )


def write_job(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


def batchrun(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """``python -m batchrun ARGS`` in a child process, with ``KEY`` as its token and ``env``
    on top of this process's environment; its output is piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "batchrun", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SCIBOX_API_KEY": KEY, **(env or {})},
    )


def finish(
    process: subprocess.Popen[str], timeout_s: float = FINISH_TIMEOUT_S
) -> tuple[int, str, str]:
    """Wait for a ``batchrun`` child: its exit code, stdout and stderr. A child still running
    after ``timeout_s`` is killed (never left behind to load later tests) and its stderr
    shown."""
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        raise AssertionError(
            f"{process.args!r} ran over {timeout_s} s; stderr:\n{err[-3000:]}"
        ) from None
    return process.returncode, out, err


def finish_all(
    processes: list[subprocess.Popen[str]], timeout_s: float
) -> list[tuple[int, str, str]]:
    """``finish`` each child within ``timeout_s`` of now, all together; if one fails, the
    others are killed too."""
    deadline = time.monotonic() + timeout_s
    try:
        return [finish(process, max(deadline - time.monotonic(), 1.0)) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


class FakeClock:
    """A clock the test moves by hand; ``sleep`` moves it instead of waiting."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


AUTH = {"Authorization": "Bearer test-token"}
THINKER = "qwen3-32b-awq"
CODER = "qwen3-coder-30b-a3b-instruct-fp8"
EMBEDDER = "bge-m3"
TEXT = (
    "Сделай резюме в двух предложениях:\n\n"
    "Квантовая запутанность связывает состояния частиц. "
    "Погода сегодня хорошая. "
    "Запутанность частиц сохраняется на любом расстоянии между частицами. "
    "Кошка спит."
)
"""A chat request's user text for the emulator's tests: an instruction, then four sentences."""


def damaged_parquet(path: Path, rows: list[dict[str, Any]], **options: Any) -> Path:
    """A Parquet file of ``rows`` (row groups of 4) whose footer reads well but whose second
    row group's ``text`` pages are damaged: 32 bytes flipped a quarter into the chunk.
    ``options`` go to ``pyarrow.parquet.write_table`` (compression, page checksums)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=4, **options)
    chunk = pq.ParquetFile(path).metadata.row_group(1).column(2)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    at = start + chunk.total_compressed_size // 4
    data = bytearray(path.read_bytes())
    data[at : at + 32] = bytes(byte ^ 0xFF for byte in data[at : at + 32])
    path.write_bytes(bytes(data))
    return path
