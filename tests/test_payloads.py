"""Rows to requests: chat templates, embeddings packing by count and by size, dedup."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchrun.job import load_job
from batchrun.payloads import Built, Duplicates, Item, PayloadBuilder
from batchrun.sources import Record


def records(texts: list[str]) -> list[Record]:
    return [
        Record(f"r{i}", {"id": f"r{i}", "text": t, "title": "x"}, Path("in.jsonl"), i + 1)
        for i, t in enumerate(texts)
    ]


def build_all(builder: PayloadBuilder, texts: list[str]) -> Built:
    first, last = builder.build(records(texts)), builder.finish()
    first.requests += last.requests
    return first


def test_chat_request_renders_the_templates(make_job: Callable[..., Path]) -> None:
    built = PayloadBuilder(load_job(make_job())).build(records(["Hello {world}"]))
    (request,) = built.requests
    assert request.body["messages"] == [
        {"role": "system", "content": "/no_think Be brief."},
        {"role": "user", "content": "Summarise:\n\nHello {world}"},
    ]


def test_embeddings_are_packed_by_count_across_input_batches(
    make_job: Callable[..., Path],
) -> None:
    builder = PayloadBuilder(load_job(make_job(kind="embeddings", run="batch_size = 4")))
    first = builder.build(records([f"text {i}" for i in range(6)]))
    assert [len(r.items) for r in first.requests] == [4]  # two wait for the next batch
    second = builder.build(records([f"more {i}" for i in range(3)]))
    assert [len(r.items) for r in second.requests] == [4]
    assert [len(r.items) for r in builder.finish().requests] == [1]


def test_embeddings_are_packed_by_estimated_tokens(make_job: Callable[..., Path]) -> None:
    job = load_job(make_job(kind="embeddings", run="batch_size = 100\nbatch_tokens = 100"))
    texts = ["a" * 120, "b" * 120, "c" * 600, "d" * 30, "e" * 30]  # 41, 41, 201, 11, 11 tokens
    built = build_all(PayloadBuilder(job), texts)
    packed = [[t[0] for t in r.body["input"]] for r in built.requests]
    assert packed == [["a", "b"], ["c"], ["d", "e"]]  # an over-long text goes alone


def test_identical_texts_are_sent_once_and_follow_the_first(
    make_job: Callable[..., Path],
) -> None:
    builder = PayloadBuilder(load_job(make_job(kind="embeddings", run="batch_size = 10")))
    built = build_all(builder, ["same", "other", "same", "same"])
    (request,) = built.requests
    assert request.body["input"] == ["same", "other"]
    leader = request.items[0]
    assert [item.id for item in leader.followers] == ["r2", "r3"]
    assert builder.duplicates.saved == 2


def test_a_text_answered_before_is_reused_without_a_request() -> None:
    duplicates = Duplicates()
    leader = Item("a", {}, "text")
    assert duplicates.route(leader, Built())
    duplicates.settled(leader, "bge-m3", [0.5, 0.5])
    built = Built()
    assert not duplicates.route(Item("b", {}, "text"), built)
    (item, model, vector) = built.reused[0]
    assert (item.id, model, vector) == ("b", "bge-m3", [0.5, 0.5])


def test_a_failed_leader_releases_its_followers() -> None:
    duplicates = Duplicates()
    leader, follower = Item("a", {}, "text"), Item("b", {}, "text")
    duplicates.route(leader, Built())
    duplicates.route(follower, Built())
    assert duplicates.settled(leader, None, None) == [follower]
    assert duplicates.route(Item("c", {}, "text"), Built())  # sent again, not reused


def test_empty_texts_are_unsendable(make_job: Callable[..., Path]) -> None:
    rows: list[Any] = ["fine", "", "   "]
    built = build_all(PayloadBuilder(load_job(make_job(kind="embeddings"))), rows)
    assert [item.id for item, _ in built.unsendable] == ["r1", "r2"]
    assert "in.jsonl:2: column 'text' is empty" in built.unsendable[0][1]
