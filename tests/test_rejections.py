"""A rejection the whole job gets stops the job; a row's own rejection fails only that row."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from batchrun.emulator import EmulatorConfig, running_emulator
from batchrun.errors import RowError
from batchrun.job.spec import load_job
from batchrun.runner import RunOptions, run_job
from batchrun.send.rejections import REJECTIONS_IN_A_ROW, JobRejected, RejectionWatch
from tests.support import news_rows
from tests.support.waits import accepted_requests

QUIET = RunOptions(progress=False)
BAD_MAX_TOKENS = RowError("400 bad request: 'max_tokens' must be a positive integer, got -5", 400)


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", "test-token")


def test_the_same_rejection_of_a_models_first_requests_stops_the_job() -> None:
    watch = RejectionWatch({"max_tokens": -5, "temperature": 0.3})
    for _ in range(REJECTIONS_IN_A_ROW - 1):
        watch.rejected("qwen3-32b-awq", BAD_MAX_TOKENS)

    with pytest.raises(JobRejected) as stopped:
        watch.rejected("qwen3-32b-awq", BAD_MAX_TOKENS)

    message = str(stopped.value)
    assert "'max_tokens' must be a positive integer, got -5" in message
    assert "[params].max_tokens = -5" in message and "temperature" not in message
    assert "--retry-failed" in message


def test_an_answer_between_rejections_starts_the_count_again() -> None:
    watch = RejectionWatch({"max_tokens": 100})
    stopped = 0
    for _ in range(3):
        for _ in range(REJECTIONS_IN_A_ROW - 1):
            watch.rejected("qwen3-32b-awq", BAD_MAX_TOKENS)
        watch.answered("qwen3-32b-awq")
    with pytest.raises(JobRejected):
        for _ in range(REJECTIONS_IN_A_ROW):
            stopped += 1
            watch.rejected("qwen3-32b-awq", BAD_MAX_TOKENS)
    assert stopped == REJECTIONS_IN_A_ROW


def test_different_rejections_do_not_add_up() -> None:
    watch = RejectionWatch({})
    for number in range(3 * REJECTIONS_IN_A_ROW):  # a JobRejected here fails the test
        watch.rejected("m", RowError(f"400 bad request: text {number} is too long", 400))

    with pytest.raises(JobRejected):  # while the same message does add up
        for _ in range(REJECTIONS_IN_A_ROW):
            watch.rejected("m", BAD_MAX_TOKENS)


def test_a_param_is_named_only_as_a_whole_word() -> None:
    watch = RejectionWatch({"n": 2, "stop": ["x"], "max_tokens": -5})
    with pytest.raises(JobRejected) as stopped:
        for _ in range(REJECTIONS_IN_A_ROW):
            watch.rejected("m", BAD_MAX_TOKENS)
    assert "[params].max_tokens = -5" in str(stopped.value)
    assert "[params].n " not in str(stopped.value) and "[params].stop" not in str(stopped.value)


async def test_a_params_error_stops_a_chat_job_after_a_few_requests(
    make_job: Callable[..., Path],
) -> None:
    async with running_emulator(EmulatorConfig(rps_scale=50)) as url:
        path = make_job(news_rows(40), base_url=url, rps=100, extra="[params]\nmax_tokens = -5")
        with pytest.raises(JobRejected, match=r"fix \[params\]\.max_tokens = -5"):
            await run_job(load_job(path), QUIET, io.StringIO())
        assert await accepted_requests(url, "qwen3-32b-awq") <= 10


async def test_an_embeddings_params_error_stops_instead_of_bisecting_to_single_texts(
    make_job: Callable[..., Path],
) -> None:
    async with running_emulator(EmulatorConfig(rps_scale=50)) as url:
        path = make_job(
            news_rows(64), kind="embeddings", base_url=url, rps=100,
            extra="[params]\ndimensions = 512", run="batch_size = 64",
        )  # fmt: skip
        with pytest.raises(JobRejected, match=r"\[params\]\.dimensions = 512"):
            await run_job(load_job(path), QUIET, io.StringIO())
        assert await accepted_requests(url, "bge-m3") <= 20  # was 125 requests for 64 rows
