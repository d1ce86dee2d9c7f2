"""``batchrun serve``'s parts on their own: the validating step's codes, round robin of the
shared slots (a fake clock: no sleeping), the config's and the keys' messages, the state's
pages and conditional updates."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import cast

import orjson
import pytest

from batchrun.errors import JobError
from batchrun.job.spec import Job
from batchrun.serve import batchrunner
from batchrun.serve.auth import Keys, owner_of
from batchrun.serve.batchjobs import BatchJobs
from batchrun.serve.batchrunner import BatchRunner
from batchrun.serve.config import load_config
from batchrun.serve.fairslots import SharedPacing
from batchrun.serve.state import BatchRow, State
from batchrun.serve.upstream import Upstream
from batchrun.serve.validation import Rules, check_file
from batchrun.tasks import job_schema, task_for
from tests.servesupport import chat_line
from tests.support import FakeClock

CHAT_URL = "/v1/chat/completions"


def _rules(tmp_path: Path) -> Rules:
    """A batch job's line rules, as the server makes them."""
    raw = {"input": {"path": "in.jsonl", "format": "openai-batch"}, "output": {"path": "out"}}
    job = Job.from_dict(raw, tmp_path / "job.toml")
    return task_for(job, job_schema(job, {})).problem


def test_validation_names_each_bad_line_with_openai_codes(tmp_path: Path) -> None:
    stream = chat_line(5)
    stream["body"]["stream"] = True
    unknown = chat_line(6)
    unknown["body"]["model"] = "gpt-9"
    no_id = chat_line(7)
    del no_id["custom_id"]
    lines = [
        chat_line(1),
        "[1, 2]",
        chat_line(1),
        stream,
        unknown,
        no_id,
        {**chat_line(8), "method": "GET"},
    ]
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b"\n".join(x.encode() if isinstance(x, str) else orjson.dumps(x) for x in lines) + b"\n\n"
    )
    checked = check_file(path, CHAT_URL, frozenset({"qwen3-32b-awq"}), _rules(tmp_path))
    assert [(e["line"], e["code"]) for e in checked.errors] == [
        (2, "invalid_json_line"),
        (3, "duplicate_custom_id"),
        (4, "invalid_request"),
        (5, "model_not_found"),
        (6, "missing_required_parameter"),
        (7, "invalid_method"),
    ]
    assert checked.total == 7 and checked.models == {"qwen3-32b-awq"}
    assert "stream" in checked.errors[2]["message"]


def test_an_empty_file_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_bytes(b"\n")
    checked = check_file(tmp_path / "empty.jsonl", CHAT_URL, None, _rules(tmp_path))
    assert [e["code"] for e in checked.errors] == ["empty_file"]


async def test_shared_slots_go_round_robin_between_batches() -> None:
    clock = FakeClock()
    pacing = SharedPacing(clock=clock, sleep=clock.sleep)
    order: list[str] = []

    async def batch(name: str, requests: int) -> None:
        pacer = pacing.pacer("m", 10.0)

        async def one() -> None:
            await pacer.slot()
            order.append(name)

        async with asyncio.TaskGroup() as group:
            for _ in range(requests):
                group.create_task(one())

    async with asyncio.TaskGroup() as group:
        group.create_task(batch("a", 30))  # many waiting
        group.create_task(batch("b", 6))
        group.create_task(batch("c", 6))
    turns = order[1:19]  # (the first slot is free: taken before b and c ask)
    assert [turns[i : i + 3].count("a") for i in range(0, 18, 3)] == [1] * 6, order
    assert len(order) == 42


async def test_a_failed_look_at_the_state_is_logged_and_the_supervisor_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    state = State(tmp_path / "state.sqlite3")
    read_batches, looks = state.batches_in, []

    def flaky(statuses: tuple[str, ...]) -> list[BatchRow]:
        looks.append(statuses)
        if len(looks) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        if len(looks) == 3:
            runner.shutdown()
        return read_batches(statuses)

    monkeypatch.setattr(state, "batches_in", flaky)
    monkeypatch.setattr(batchrunner, "TICK_AFTER_ERROR_S", 0.01)
    # (the looks here find no batch: no job, no upstream is needed)
    unused_jobs, unused_upstream = cast(BatchJobs, None), cast(Upstream, None)
    runner = BatchRunner(
        state, unused_jobs, unused_upstream, SharedPacing(), max_running=1, rates={}
    )
    await asyncio.wait_for(runner.run(), 10)
    state.close()
    assert len(looks) == 3
    assert "cannot look at the batches' state; trying again" in caplog.text
    assert "disk I/O error" in caplog.text


async def test_a_failure_the_state_cannot_record_leaves_the_batch_for_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    state = State(tmp_path / "state.sqlite3")
    state.add_batch(BatchRow("b1", "me", CHAT_URL, "f", "24h", "validating", 1, 10**10))
    read_batches, looks = state.batches_in, []

    def then_stop(statuses: tuple[str, ...]) -> list[BatchRow]:
        looks.append(statuses)
        if len(looks) == 3:
            runner.shutdown()
        return read_batches(statuses)

    def unwritable(batch_id: str, **changes: object) -> bool:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(state, "batches_in", then_stop)
    monkeypatch.setattr(state, "update_batch", unwritable)
    monkeypatch.setattr(batchrunner, "TICK_AFTER_ERROR_S", 0.01)
    # (no upstream: the batch's validating step fails at once, and so does recording it)
    runner = BatchRunner(
        state, cast(BatchJobs, None), cast(Upstream, None), SharedPacing(), max_running=1,
        rates={},
    )  # fmt: skip
    await asyncio.wait_for(runner.run(), 10)
    row = state.batch("b1")
    state.close()
    assert row is not None and row.status == "validating"
    assert "batch b1: cannot record that it failed; trying it again" in caplog.text


def test_config_names_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text('[batches]\nmax_runing = 3\n[storage]\npath = "s"\n')
    with pytest.raises(
        JobError, match=r"\[batches\]\.max_runing: unknown key; did you mean 'max_running'"
    ):
        load_config(path)


def test_keys_are_required_unless_no_auth_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATCHRUN_SERVE_KEYS", raising=False)
    with pytest.raises(JobError, match="set BATCHRUN_SERVE_KEYS"):
        Keys.from_env("BATCHRUN_SERVE_KEYS", no_auth=False, host="127.0.0.1")
    with pytest.raises(JobError, match=r"only on 127\.0\.0\.1"):
        Keys.from_env("BATCHRUN_SERVE_KEYS", no_auth=True, host="0.0.0.0")
    assert "secret" not in owner_of("secret")


def test_state_pages_newest_first_and_updates_only_from_the_expected_status(
    tmp_path: Path,
) -> None:
    state = State(tmp_path / "s.sqlite3")
    for i in range(5):
        state.add_batch(BatchRow(f"b{i}", "me", CHAT_URL, "f", "24h", "validating", i, i + 10))
    state.add_batch(BatchRow("other", "them", CHAT_URL, "f", "24h", "validating", 9, 19))
    assert [b.id for b in state.batches("me", None, 2)] == ["b4", "b3"]
    assert [b.id for b in state.batches("me", "b3", 10)] == ["b2", "b1", "b0"]
    assert state.batch("other", "me") is None
    assert not state.update_batch("b0", when="in_progress", status="cancelling")
    assert state.update_batch("b0", when="validating", status="in_progress")
    state.close()
    assert State(tmp_path / "s.sqlite3").batch("b0", "me").status == "in_progress"  # type: ignore[union-attr]
