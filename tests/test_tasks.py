"""The request kinds: chat templates, embeddings packing by count and by size, dedup, splitting,
and the clash of kept columns with a task's own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from batchrun.errors import JobError
from batchrun.input.readers import Record
from batchrun.job.spec import Job, load_job
from batchrun.tasks import job_schema, task_for
from batchrun.tasks.base import Built, Item, Task
from batchrun.tasks.duplicates import Duplicates, Reuse


def records(texts: list[str]) -> list[Record]:
    return [
        Record(f"r{i}", {"id": f"r{i}", "text": t, "title": "x"}, Path("in.jsonl"), i + 1)
        for i, t in enumerate(texts)
    ]


def task_of(job: Job) -> Task[Any]:
    return task_for(job, job_schema(job, {"title": pa.string()}))


def build_all(builder: Task[Any], texts: list[str]) -> Built:
    first, last = builder.build(records(texts)), builder.finish()
    first.requests += last.requests
    return first


def test_chat_request_renders_the_templates(make_job: Callable[..., Path]) -> None:
    built = task_of(load_job(make_job())).build(records(["Hello {world}"]))
    (request,) = built.requests
    assert request.body["messages"] == [
        {"role": "system", "content": "/no_think Be brief."},
        {"role": "user", "content": "Summarise:\n\nHello {world}"},
    ]


def test_embeddings_are_packed_by_count_across_input_batches(
    make_job: Callable[..., Path],
) -> None:
    builder = task_of(load_job(make_job(kind="embeddings", run="batch_size = 4")))
    first = builder.build(records([f"text {i}" for i in range(6)]))
    assert [len(r.items) for r in first.requests] == [4]  # two wait for the next batch
    second = builder.build(records([f"more {i}" for i in range(3)]))
    assert [len(r.items) for r in second.requests] == [4]
    assert [len(r.items) for r in builder.finish().requests] == [1]


def test_embeddings_are_packed_by_estimated_tokens(make_job: Callable[..., Path]) -> None:
    job = load_job(make_job(kind="embeddings", run="batch_size = 100\nbatch_tokens = 100"))
    texts = ["a" * 120, "b" * 120, "c" * 600, "d" * 30, "e" * 30]  # 41, 41, 201, 11, 11 tokens
    built = build_all(task_of(job), texts)
    packed = [[t[0] for t in r.body["input"]] for r in built.requests]
    assert packed == [["a", "b"], ["c"], ["d", "e"]]  # an over-long text goes alone


def test_identical_texts_are_sent_once_and_follow_the_first(
    make_job: Callable[..., Path],
) -> None:
    builder = task_of(load_job(make_job(kind="embeddings", run="batch_size = 10")))
    built = build_all(builder, ["same", "other", "same", "same"])
    (request,) = built.requests
    assert request.body["input"] == ["same", "other"]
    leader = request.items[0]
    assert [item.id for item in leader.followers] == ["r2", "r3"]
    assert builder.saved == 2


def test_a_text_answered_before_is_reused_without_a_request() -> None:
    duplicates = Duplicates()
    leader = Item("a", {}, 0, "text")
    assert duplicates.route(leader) == "send"
    duplicates.settled(leader, Reuse("bge-m3", b"\x00\x00\x00\x3f"))

    assert duplicates.route(Item("b", {}, 0, "text")) == Reuse("bge-m3", b"\x00\x00\x00\x3f")
    assert duplicates.saved == 1


def test_a_failed_leader_releases_its_followers() -> None:
    duplicates = Duplicates()
    leader, follower = Item("a", {}, 0, "text"), Item("b", {}, 0, "text")
    duplicates.route(leader)
    assert duplicates.route(follower) == "follow"
    assert duplicates.settled(leader, None) == [follower]
    assert duplicates.route(Item("c", {}, 0, "text")) == "send"  # sent again, not reused


def test_empty_texts_fail_without_a_request(make_job: Callable[..., Path]) -> None:
    rows: list[Any] = ["fine", "", "   "]
    built = build_all(task_of(load_job(make_job(kind="embeddings"))), rows)
    assert [row["id"] for row in built.rows] == ["r1", "r2"]
    assert {row["status"] for row in built.rows} == {"failed"}
    assert "in.jsonl:2: column 'text' is empty" in built.rows[0]["error"]
    assert [item.id for r in built.requests for item in r.items] == ["r0"]


def test_a_rejected_embeddings_request_splits_in_halves_and_a_chat_one_does_not(
    make_job: Callable[..., Path],
) -> None:
    embeddings = task_of(load_job(make_job(kind="embeddings", run="batch_size = 5")))
    (request,) = build_all(embeddings, ["a", "b", "c", "d", "e"]).requests

    halves = embeddings.split(request)

    assert [h.body["input"] for h in halves] == [["a", "b"], ["c", "d", "e"]]
    assert embeddings.split(halves[0].__class__(halves[0].items[:1], {})) == []
    chat = task_of(load_job(make_job()))
    (single,) = build_all(chat, ["a"]).requests
    assert chat.split(single) == []


@pytest.mark.parametrize(("kind", "column"), [("chat", "content"), ("embeddings", "embedding")])
def test_a_kept_column_named_like_an_output_column_is_a_job_error(
    make_job: Callable[..., Path], kind: str, column: str
) -> None:
    job = load_job(make_job(kind=kind))

    with pytest.raises(JobError, match=f"keep: {column} would clash"):
        job_schema(job, {column: pa.string()})
