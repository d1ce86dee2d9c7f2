"""Every model a job names is checked against ``GET /v1/models`` before a row is sent."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from batchrun.cli import main
from batchrun.emulator import EmulatorConfig, running_emulator
from batchrun.errors import FatalError
from batchrun.job.spec import load_job
from batchrun.report.overview import model_lines
from batchrun.runner import RunOptions, run_job

MISSPELT = 'fallback_model = "qwen3-coder-30b"'


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", "test-token")


async def test_a_misspelt_fallback_model_stops_the_run_before_any_row(
    make_job: Callable[..., Path],
) -> None:
    async with running_emulator(EmulatorConfig(rps_scale=50)) as url:
        job = load_job(make_job(base_url=url, rps=100, run=MISSPELT))
        with pytest.raises(FatalError, match=r"\[run\]\.fallback_model = 'qwen3-coder-30b'"):
            await run_job(job, RunOptions(progress=False), io.StringIO())
        async with aiohttp.ClientSession() as session, session.get(f"{url}/../stats") as reply:
            stats = await reply.json()
    assert all(model["accepted"] == 0 for model in stats["models"].values())


async def test_validate_reports_a_model_the_endpoint_does_not_serve(
    make_job: Callable[..., Path],
) -> None:
    lines, served = await model_lines(load_job(make_job(run=MISSPELT)))

    assert not served
    assert "does not serve [run].fallback_model = 'qwen3-coder-30b'" in lines[0]


async def test_validate_says_when_the_model_check_was_skipped(
    make_job: Callable[..., Path],
) -> None:
    job = load_job(make_job(base_url="http://127.0.0.1:9/v1"))

    lines, served = await model_lines(job)

    assert served
    assert lines[0].startswith("models not checked: cannot reach http://127.0.0.1:9/v1")


def test_validate_exits_2_for_a_misspelt_model(
    make_job: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(make_job(run=MISSPELT))]) == 2
    out = capsys.readouterr().out
    assert "does not serve [run].fallback_model = 'qwen3-coder-30b' (it serves: " in out
    assert "fix the job file (`batchrun models JOB.toml` lists them)" in out
