"""Nothing lost, nothing leaked: kills at random moments, signals, a misbehaving service,
unwritable output, retrying failed rows. Against the real emulator and the real CLI."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import random
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchrun.bench.processes import Emulator
from batchrun.cli import main
from batchrun.emulator import EmulatorConfig, running_emulator
from batchrun.emulator.summaries import summarise
from batchrun.errors import OutputError
from batchrun.job.catalog import MODELS
from batchrun.job.spec import load_job
from batchrun.output.layout import OutputLayout
from batchrun.output.store import Store
from batchrun.runner import RunOptions, run_job
from batchrun.service.answers import split_think
from tests.support import KEY, THINKER, batchrun, finish, news_rows
from tests.support.outputs import abandon, read_columns
from tests.support.waits import requests_admitted, wait_until_sending, wait_until_taken

QUIET = RunOptions(progress=False)


def expected_content(row: dict[str, Any]) -> str:
    """What the emulator answers for a row of make_job's chat job (it is deterministic)."""
    messages = (("system", "/no_think Be brief."), ("user", f"Summarise:\n\n{row['text']}"))
    answer = summarise(MODELS["qwen3-32b-awq"], messages, None)
    return split_think(answer.content)[0]


def check_row_by_row(rows: list[dict[str, Any]], path: str = "out") -> None:
    """Every input id exactly once, every row ok with the answer of its own prompt, and every
    part readable."""
    for part in OutputLayout(Path(path)).parts():
        assert read_columns(Path(path), ["id"]).num_rows >= 0, part
    table = read_columns(Path(path), ["id", "status", "content"]).to_pylist()
    ids = [row["id"] for row in table]
    assert len(ids) == len(set(ids)), "an id is in the output twice"
    assert sorted(ids) == sorted(row["id"] for row in rows), "an id is missing"
    by_id = {row["id"]: row for row in table}
    for row in rows:
        assert by_id[row["id"]]["status"] == "ok", by_id[row["id"]]
        assert by_id[row["id"]]["content"] == expected_content(row), row["id"]


@pytest.fixture
def faulty_emulator(emulator_dir: Path) -> Iterator[str]:
    faults = ("--fail-rate", "0.15", "--drop-rate", "0.05", "--seed", "7")
    with Emulator(emulator_dir, rps_scale=50, options=faults) as emulator:
        yield emulator.base_url


@pytest.mark.serial
def test_ten_kills_at_random_moments_lose_and_duplicate_nothing(
    make_job: Callable[..., Path], faulty_emulator: str
) -> None:
    rows = news_rows(150)
    run = "part_rows = 7"
    job = make_job(rows, base_url=faulty_emulator, rps=60, run="concurrency = 8")
    job.write_text(job.read_text().replace('keep = ["title"]', f'keep = ["title"]\n{run}'))
    moments = random.Random(11)
    for _ in range(10):  # some 80 requests admitted in all, of 150 rows: none is too late
        process = batchrun("run", str(job), "--no-progress")
        more = moments.randint(1, 12)
        wait_until_sending(
            faulty_emulator, THINKER, requests_admitted(faulty_emulator, THINKER) + more
        )
        process.send_signal(signal.SIGKILL)
        process.communicate()
    code, _, err = finish(batchrun("run", str(job), "--no-progress"))
    assert code == 0, err
    check_row_by_row(rows)
    assert not OutputLayout(Path("out")).journals(), "a journal was left behind"


async def test_a_misbehaving_service_loses_no_row_and_writes_no_wrong_one(
    make_job: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", KEY)
    chaos = EmulatorConfig(
        rps_scale=50,
        fail_rate=0.15,
        drop_rate=0.05,
        cut_stream_rate=0.1,
        stall_rate=0.05,
        spike_rate=0.05,
        spike_s=3.0,
        seed=3,
    )
    rows = news_rows(60)
    settings = "stream = true\ntimeout_s = 1.5\nidle_timeout_s = 0.5\nmax_attempts = 20"
    async with running_emulator(chaos) as url:
        job = load_job(make_job(rows, base_url=url, rps=100, run=settings))
        assert (await run_job(job, QUIET, io.StringIO())).ok
    check_row_by_row(rows)


async def test_a_rejected_text_in_a_packed_request_fails_alone(
    make_job: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", KEY)
    rows = news_rows(20)
    rows[7]["text"] = "x" * 40_000  # over the service's input limit: 400
    async with running_emulator(EmulatorConfig(rps_scale=50)) as url:
        job = load_job(make_job(rows, kind="embeddings", base_url=url, run="batch_size = 8"))
        assert (await run_job(job, QUIET, io.StringIO())).failed_rows
    table = read_columns(Path("out"), ["id", "status", "error"]).to_pylist()
    failed = [row for row in table if row["status"] == "failed"]
    assert [row["id"] for row in failed] == ["n00007"]
    assert "400" in failed[0]["error"]
    assert len(table) == 20


async def test_retry_failed_replaces_failed_rows_and_keeps_each_id_once(
    make_job: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", KEY)
    rows = news_rows(30)
    async with running_emulator(EmulatorConfig(rps_scale=50, fail_rate=0.5, seed=1)) as url:
        job = load_job(make_job(rows, base_url=url, rps=100, run="max_attempts = 1"))
        assert (await run_job(job, QUIET, io.StringIO())).failed_rows
    first = read_columns(Path("out"), ["status"]).column("status").to_pylist()
    assert 0 < first.count("failed") < 30
    async with running_emulator(EmulatorConfig(rps_scale=50)) as url:
        job = load_job(make_job(rows, base_url=url, rps=100, run="max_attempts = 1"))
        assert (await run_job(job, QUIET, io.StringIO())).failed_rows  # resume: no-op
        retry = RunOptions(progress=False, retry_failed=True)
        assert (await run_job(job, retry, io.StringIO())).ok
    check_row_by_row(rows)


async def test_unwritable_output_stops_the_run_and_nothing_is_lost(
    make_job: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", KEY)
    rows = news_rows(40)
    original = Store.append
    calls = 0

    def disk_full_after_a_while(self: Store, batch: list[dict[str, Any]]) -> None:
        nonlocal calls
        calls += 1
        if calls > 3:
            raise OutputError(f"{self.path}: cannot write ({os.strerror(errno.ENOSPC)})")
        original(self, batch)

    async with running_emulator(EmulatorConfig(rps_scale=50)) as url:
        job = load_job(make_job(rows, base_url=url, rps=100, run="concurrency = 2"))
        monkeypatch.setattr(Store, "append", disk_full_after_a_while)
        with pytest.raises(OutputError, match="out: cannot write"):
            await run_job(job, QUIET, io.StringIO())
        monkeypatch.setattr(Store, "append", original)
        assert 0 < read_columns(Path("out"), ["id"]).num_rows < 40
        assert (await run_job(job, QUIET, io.StringIO())).ok
    check_row_by_row(rows)


async def test_a_stop_asked_after_the_run_has_ended_does_nothing(
    make_job: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``batchrun serve`` stops a batch's job when its window passes, and ``batchrun.run``
    on Ctrl-C: either may ask just as the job's own loop closes."""
    monkeypatch.setenv("SCIBOX_API_KEY", KEY)
    stops: list[Callable[[], None]] = []
    async with running_emulator(EmulatorConfig(rps_scale=50)) as url:
        job = load_job(make_job(news_rows(5), base_url=url, rps=100))
        options = RunOptions(progress=False, signals=False, on_start=stops.append)
        work = run_job(job, options, io.StringIO())
        assert (await asyncio.to_thread(asyncio.run, work)).ok  # a loop of its own, closed
    stops[0]()
    check_row_by_row(news_rows(5))


@pytest.mark.serial
def test_second_ctrl_c_cancels_requests_in_flight_at_once(
    make_job: Callable[..., Path], emulator_dir: Path
) -> None:
    with Emulator(emulator_dir, rps_scale=50, latency_s=30) as emulator:
        job = make_job(news_rows(20), base_url=emulator.base_url, rps=100, run="grace_s = 60")
        run = batchrun("run", str(job), "--no-progress")
        wait_until_sending(emulator.base_url, THINKER)
        run.send_signal(signal.SIGINT)
        wait_until_taken(run, signal.SIGINT)  # so the next is a second Ctrl-C, not the same
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=20)  # not the 30 s answers, nor the 60 s grace
    assert run.returncode == 130, err
    assert "resume" in out
    assert "Traceback" not in err


@pytest.mark.serial
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_first_stop_sends_no_request_that_was_not_already_sent(
    sig: signal.Signals, make_job: Callable[..., Path], emulator_dir: Path
) -> None:
    rows = news_rows(400)
    with Emulator(emulator_dir, rps_scale=15, latency_s=2) as emulator:  # 30 RPS, 2 s answers
        job = make_job(rows, base_url=emulator.base_url, rps=30, run="grace_s = 3")
        run = batchrun("run", str(job), "--no-progress")
        wait_until_sending(emulator.base_url, THINKER, count=20)  # about 60 in flight
        run.send_signal(sig)
        sent = emulator.seen(THINKER).accepted
        code, out, err = finish(run)
        after = emulator.seen(THINKER).accepted
    assert code == 130 and "resume" in out, err
    assert after - sent <= 3, f"{after - sent} requests accepted after the stop"  # on the wire
    assert "Traceback" not in err
    done = read_columns(Path("out"), ["id"]).num_rows
    assert 0 < done < len(rows)
    with Emulator(emulator_dir, rps_scale=50) as emulator:
        job = make_job(rows, base_url=emulator.base_url, rps=100)
        code, _, err = finish(batchrun("run", str(job), "--no-progress"))
        assert code == 0, err
        assert emulator.seen(THINKER).accepted == len(rows) - done  # exactly once
    check_row_by_row(rows)


@pytest.mark.serial
def test_sigterm_stops_like_ctrl_c(make_job: Callable[..., Path], emulator_dir: Path) -> None:
    with Emulator(emulator_dir, rps_scale=5) as emulator:
        job = make_job(news_rows(200), base_url=emulator.base_url, rps=10, run="grace_s = 5")
        run = batchrun("run", str(job), "--no-progress")
        wait_until_sending(emulator.base_url, THINKER, count=5)
        run.send_signal(signal.SIGTERM)
        code, out, _ = finish(run)
        assert "interrupted" in out
    assert code == 130
    assert 0 < read_columns(Path("out"), ["id"]).num_rows < 200


def test_an_endpoint_that_never_answers_exits_3_after_the_timeout(
    make_job: Callable[..., Path],
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as black_hole:  # accepts, never answers
        port = black_hole.getsockname()[1]
        job = make_job(base_url=f"http://127.0.0.1:{port}/v1", run="timeout_s = 1")
        code, _, err = finish(batchrun("run", str(job)))
    assert code == 3
    assert f"cannot reach http://127.0.0.1:{port}/v1" in err
    assert "no answer" in err


def test_changing_the_prompt_is_refused_on_an_existing_output(
    make_job: Callable[..., Path], capsys: pytest.CaptureFixture[str], emulator_dir: Path
) -> None:
    with Emulator(emulator_dir, rps_scale=50) as emulator:
        job = make_job(news_rows(5), base_url=emulator.base_url, rps=100)
        assert finish(batchrun("run", str(job)))[0] == 0
        job.write_text(job.read_text().replace("Be brief.", "Be very brief."))
        code, _, err = finish(batchrun("run", str(job)))
    assert code == 2
    assert "--fresh" in err
    assert "prompt" in err


def test_the_key_never_appears_anywhere(make_job: Callable[..., Path], emulator_dir: Path) -> None:
    secret = "tok-recognisable-SECRET-7f3a9c"
    faults = ("--fail-rate", "0.3")
    with Emulator(emulator_dir, rps_scale=50, options=faults, api_key=secret) as emulator:
        rows = [*news_rows(10), {"id": "empty", "title": "t", "text": ""}]
        job = make_job(rows, base_url=emulator.base_url, rps=100, run="max_attempts = 2")
        code, out, err = finish(batchrun("run", str(job), env={"SCIBOX_API_KEY": secret}))
        wrong = {"SCIBOX_API_KEY": secret + "-wrong"}
        refused, refused_out, refused_err = finish(batchrun("run", str(job), "--fresh", env=wrong))
    assert code in (0, 1), err
    assert refused == 3
    seen = out + err + refused_out + refused_err
    for path in Path(".").rglob("*"):
        if path.is_file():
            seen += path.read_bytes().decode("utf-8", "replace")
    loaded = load_job(job)
    seen += repr(loaded) + repr(EmulatorConfig(api_key=secret))
    assert secret not in seen
    assert "SECRET" not in seen


def test_validate_reports_rows_without_text(
    make_job: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rows: list[dict[str, Any]] = news_rows(4)
    rows[1]["text"] = None
    rows[2]["text"] = 42
    rows[3]["text"] = "  "
    assert main(["validate", str(make_job(rows))]) == 2
    out = capsys.readouterr().out
    assert "3 rows cannot be sent" in out and "is empty or not text" in out
    assert "news.jsonl:2" in out


@pytest.mark.serial
async def test_a_changed_prompt_is_refused_even_when_the_killed_run_left_only_a_journal(
    make_job: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", KEY)
    rows = news_rows(30)
    async with running_emulator(EmulatorConfig(rps_scale=50)) as url:
        job = load_job(make_job(rows, base_url=url, rps=100))
        original = Store.close
        monkeypatch.setattr(Store, "close", abandon)  # killed before the first part
        await run_job(job, RunOptions(limit=5, progress=False), io.StringIO())
        monkeypatch.setattr(Store, "close", original)
        assert journal_files("out") and not OutputLayout(Path("out")).parts()
        changed = make_job(rows, base_url=url, rps=100)
        changed.write_text(changed.read_text().replace("Be brief.", "Be long."))
        with pytest.raises(OutputError, match="--fresh"):
            await run_job(load_job(changed), QUIET, io.StringIO())


def journal_files(path: str) -> list[Path]:
    return OutputLayout(Path(path)).journals()
