"""The output's keys: saved by a finished run, trusted only while the parts they cover are
unchanged, and combined with the parts written since by compaction's rule."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrun import diff
from batchrun.diff import ReusableAnswers
from batchrun.errors import OutputError
from batchrun.hashing import SortedHashes, id_hashes
from batchrun.output import compaction, keyruns, partkeys
from batchrun.output import keys as output_keys
from batchrun.output.keyruns import EMPTY, merge, read_run, winners
from batchrun.output.keyruns import SCHEMA as KEYS_SCHEMA
from batchrun.output.keys import OutputKeys, output_counts, settle
from batchrun.output.layout import OutputLayout
from batchrun.output.lookup import MappedKeys
from batchrun.output.partkeys import current_label
from batchrun.output.parts import read_columns, write_part
from batchrun.output.rows import output_schema
from batchrun.output.store import Store
from batchrun.tasks.chat import FIELDS as CHAT_FIELDS

SCHEMA = output_schema({}, CHAT_FIELDS)


def part(output: Path, token: str, rows: list[tuple[str, str, int]]) -> Path:
    """A part of rows ``(id, status, request hash)``."""
    dicts: list[dict[str, Any]] = [
        {"id": row_id, "model": "m", "status": status, "attempts": 1, "request_hash": request}
        for row_id, status, request in rows
    ]
    path = OutputLayout(output).part(token)
    write_part(path, pa.Table.from_pylist(dicts, schema=SCHEMA))
    return path


def look_up(keys: OutputKeys, *ids: str) -> list[tuple[bool, int | None, bool]]:
    """``(present, request hash, ok)`` of each id, in the order given."""
    hashes = id_hashes(list(ids))
    order = hashes.arg_sort()
    found = keys.find(hashes.gather(order).set_sorted())
    back = order.arg_sort()
    present, request, ok = (
        s.gather(back).to_list() for s in (found.present, found.request, found.ok)
    )
    return list(zip(present, request, ok, strict=True))


def saved(output: Path) -> tuple[pa.Table, dict[str, Any]]:
    """The saved keys (read into memory) and their metadata."""
    source = pa.BufferReader(OutputLayout(output).keys.read_bytes())
    table = pa.ipc.open_file(source).read_all()
    return table, orjson.loads((table.schema.metadata or {})[b"batchrun"])


def saved_rows(keys: OutputKeys) -> int:
    return sum(map(len, keys.saved))


def saved_parts(output: Path) -> list[str]:
    return [name for name, *_ in saved(output)[1]["parts"]]


def test_saved_keys_spare_reading_the_parts_they_cover(tmp_path: Path) -> None:
    covered = part(tmp_path, "all-1-1", [("a", "ok", 11), ("b", "failed", 12)])
    Store(tmp_path, SCHEMA).open().close()
    stat = covered.stat()
    covered.write_bytes(b"x" * stat.st_size)  # unreadable, were it read
    os.utime(covered, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    assert OutputKeys.load(tmp_path).counts() == (1, 1)


def test_a_changed_part_makes_the_saved_keys_stale(tmp_path: Path) -> None:
    covered = part(tmp_path, "all-1-1", [("a", "ok", 11), ("b", "failed", 12)])
    Store(tmp_path, SCHEMA).open().close()
    part(tmp_path, "all-1-1", [("a", "ok", 11), ("b", "ok", 21)])  # rewritten
    os.utime(covered, ns=(1, 1))

    keys = OutputKeys.load(tmp_path)

    assert not keys.saved
    assert keys.counts() == (2, 0)


def test_saved_keys_answer_lookups_and_counts(tmp_path: Path) -> None:
    part(tmp_path, "all-1-1", [("a", "ok", 11), ("b", "failed", 12)])
    Store(tmp_path, SCHEMA).open().close()
    assert saved_parts(tmp_path) == ["part-all-1-1.parquet"]

    keys = OutputKeys.load(tmp_path)

    assert saved_rows(keys) == 2 and keys.recent.is_empty()
    assert look_up(keys, "a", "b", "c") == [
        (True, 11, True),
        (True, 12, False),
        (False, None, False),
    ]
    assert output_counts(tmp_path) == {"ok": 1, "failed": 1}


def test_parts_written_since_join_the_saved_keys_by_compactions_rule(tmp_path: Path) -> None:
    part(tmp_path, "all-1-1", [("a", "ok", 11), ("b", "failed", 12), ("c", "ok", 13)])
    Store(tmp_path, SCHEMA).open().close()
    part(tmp_path, "all-2-1", [("b", "ok", 22), ("c", "failed", 23), ("d", "ok", 24)])

    keys = OutputKeys.load(tmp_path)

    assert saved_rows(keys) == 3 and len(keys.recent) == 3
    assert keys.has_repeated_ids
    assert look_up(keys, "a", "b", "c", "d") == [
        (True, 11, True),
        (True, 22, True),  # the newer ok row
        (True, 13, True),  # ok beats the newer failed row
        (True, 24, True),
    ]
    assert keys.counts() == (4, 0)


def test_compaction_leaves_one_row_per_id_and_saves_the_keys_of_the_result(tmp_path: Path) -> None:
    part(tmp_path, "all-1-1", [("a", "ok", 11), ("b", "failed", 12)])
    Store(tmp_path, SCHEMA).open().close()
    part(tmp_path, "all-2-1", [("b", "ok", 22)])

    Store(tmp_path, SCHEMA).open().close()

    keys = OutputKeys.load(tmp_path)
    assert not keys.has_repeated_ids and keys.recent.is_empty()
    assert sorted(saved_parts(tmp_path)) == ["part-all-1-1.parquet", "part-all-2-1.parquet"]
    assert look_up(keys, "a", "b") == [(True, 11, True), (True, 22, True)]


def test_keys_of_another_hash_function_or_unsorted_are_not_trusted(tmp_path: Path) -> None:
    part(tmp_path, "all-1-1", [("a", "ok", 11), ("b", "ok", 12), ("c", "ok", 13)])
    Store(tmp_path, SCHEMA).open().close()
    path = OutputLayout(tmp_path).keys
    table, metadata = saved(tmp_path)

    for changed, reordered in (({**metadata, "hasher": "another"}, False), (metadata, True)):
        rows = table.take(pa.array([2, 0, 1])) if reordered else table
        rows = rows.replace_schema_metadata({"batchrun": orjson.dumps(changed)})
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, rows.schema) as writer:
            writer.write_table(rows)

        keys = OutputKeys.load(tmp_path)

        assert not keys.saved and len(keys.recent) == 3
        assert keys.counts() == (3, 0)


def test_lookups_take_sorted_ids(tmp_path: Path) -> None:
    part(tmp_path, "all-1-1", [("a", "ok", 11)])
    keys = OutputKeys.load(tmp_path)

    with pytest.raises(ValueError, match="sorted"):
        keys.find(pl.Series([3, 1, 2], dtype=pl.UInt64))


def test_a_part_sealed_while_the_keys_are_merged_is_merged_next_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    part(tmp_path, "all-1-1", [("a", "ok", 11)])

    def read_run_while_a_shard_seals(path: Path, age: int) -> Iterator[pl.DataFrame]:
        if not OutputLayout(tmp_path).part("s1of2-2-2").exists():
            part(tmp_path, "s1of2-2-2", [("b", "ok", 12)])
        return read_run(path, age)

    monkeypatch.setattr(output_keys, "read_run", read_run_while_a_shard_seals)
    assert settle(tmp_path).is_empty()
    monkeypatch.undo()

    assert saved_parts(tmp_path) == ["part-all-1-1.parquet"]
    again = OutputKeys.load(tmp_path)
    assert again.counts() == (2, 0) and look_up(again, "b") == [(True, 12, True)]
    assert settle(tmp_path).is_empty()
    assert saved_parts(tmp_path) == ["part-all-1-1.parquet", "part-s1of2-2-2.parquet"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 40), st.booleans()), max_size=30), min_size=1, max_size=6
    )
)
def test_merging_runs_a_batch_at_a_time_gives_compactions_winners(
    runs: list[list[tuple[int, bool]]],
) -> None:
    frames = [
        pl.DataFrame(
            {
                "id_hash": [i for i, _ in rows],
                "request_hash": [age] * len(rows),
                "ok": [o for _, o in rows],
            },
            schema=EMPTY,
        )
        for age, rows in enumerate(runs)
    ]
    expected = winners(pl.concat(frames))[0]  # oldest run first
    sorted_runs = [winners(frame)[0] for frame in frames]
    merged: list[pl.DataFrame] = []

    def batches(frame: pl.DataFrame, age: int) -> Iterator[pl.DataFrame]:
        for start in range(0, len(frame), 4):  # tiny batches: many merge steps
            yield frame.slice(start, 4).with_columns(age=pl.lit(age, pl.Int32))

    in_several = merge([batches(f, age) for age, f in enumerate(sorted_runs)], merged.append)

    result = pl.concat(merged).select(list(EMPTY.names())) if merged else pl.DataFrame(schema=EMPTY)
    assert result.rows() == expected.rows()
    ids_per_run = [set(frame["id_hash"].to_list()) for frame in frames]
    runs_of = Counter(i for ids in ids_per_run for i in ids)
    assert sorted(in_several.to_list()) == sorted(i for i, count in runs_of.items() if count > 1)


def test_saved_keys_in_several_batches_answer_lookups_and_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output_keys, "SAVED_BATCH_ROWS", 3)
    names = [f"id-{n}" for n in range(20)]
    part(
        tmp_path,
        "all-1-1",
        [(name, "ok" if n % 3 else "failed", n) for n, name in enumerate(names)],
    )

    assert settle(tmp_path).is_empty()

    keys = OutputKeys.load(tmp_path)
    assert len(keys.saved) == 7 and keys.recent.is_empty()
    assert look_up(keys, *names, "absent") == [
        *((True, n, bool(n % 3)) for n in range(20)),
        (False, None, False),
    ]
    assert keys.counts() == (13, 7)


def test_requests_answered_ok_are_found_in_saved_batches_and_in_recent_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output_keys, "SAVED_BATCH_ROWS", 2)
    done = [("a", "ok", 11), ("b", "failed", 12), ("c", "ok", 13), ("d", "ok", -14)]
    part(tmp_path, "all-1-1", done)
    Store(tmp_path, SCHEMA).open().close()
    part(tmp_path, "all-2-1", [("e", "ok", -15), ("f", "failed", 16), ("b", "ok", 17)])
    keys = OutputKeys.load(tmp_path)
    assert len(keys.saved) == 2 and len(keys.recent) == 3

    asked = np.array([-15, -14, 11, 12, 16, 17, 99], np.int64)

    assert keys.answered(asked).tolist() == [-15, -14, 11, 17]


def test_rows_to_do_checked_a_few_at_a_time_find_every_answered_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diff, "REUSE_CHECK_HASHES", 2)
    part(tmp_path, "all-1-1", [(f"id{n}", "ok" if n != 3 else "failed", n) for n in range(6)])
    reusable = ReusableAnswers(OutputKeys.load(tmp_path))

    for requests in ([1, 9], [2], [3, 8, 4], [5]):
        reusable.add(np.array(requests, np.int64))
    found = reusable.found()

    assert [n for n in range(10) if n in found] == [1, 2, 4, 5]


@given(
    values=st.lists(st.integers(-(2**63), 2**63 - 1)),
    probes=st.lists(st.integers(-(2**63), 2**63 - 1)),
)
def test_sorted_hashes_hold_what_a_set_of_them_holds(values: list[int], probes: list[int]) -> None:
    hashes = SortedHashes(np.array(values, np.int64))

    assert len(hashes) == len(set(values))
    assert [p in hashes for p in values + probes] == [p in set(values) for p in values + probes]


def test_a_sealed_part_brings_its_keys_and_closing_merges_them(tmp_path: Path) -> None:
    store = Store(tmp_path, SCHEMA).open()
    for token in ("a", "b"):
        rows = [
            {"id": f"{token}{n}", "model": "m", "status": "ok", "attempts": 1, "request_hash": n}
            for n in range(5)
        ]
        store.append(pa.Table.from_pylist(rows, schema=SCHEMA))
        store.seal()
    layout = OutputLayout(tmp_path)
    assert len(layout.part_keys_files()) == 2  # one run per part, not merged yet

    store.close()

    assert layout.part_keys_files() == []
    assert saved_parts(tmp_path) == [p.name for p in layout.parts()]
    assert output_counts(tmp_path) == {"ok": 10, "failed": 0}


def test_keys_a_killed_run_was_writing_are_removed(tmp_path: Path) -> None:
    part(tmp_path, "all-1-1", [("a", "ok", 11)])
    state = OutputLayout(tmp_path).state
    leftovers = [state / "._keys.arrows.999.tmp", state / "._keys-all-2-2.arrows.999.tmp"]
    for leftover in leftovers:
        leftover.write_bytes(b"half")

    Store(tmp_path, SCHEMA).open().close()

    assert not any(leftover.exists() for leftover in leftovers)
    assert output_counts(tmp_path) == {"ok": 1, "failed": 0}


@pytest.mark.parametrize("resave_rows", [100_000, 1])  # keys read beside, or merged
def test_the_keys_name_the_ids_with_several_rows_and_compaction_reads_only_theirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resave_rows: int
) -> None:
    part(tmp_path, "all-1-1", [("a", "ok", 1), ("b", "failed", 2), ("c", "ok", 3)])
    Store(tmp_path, SCHEMA).open().close()  # saved keys cover it
    part(tmp_path, "all-2-1", [("b", "ok", 4), ("d", "failed", 5)])
    part(tmp_path, "all-3-1", [("d", "ok", 6), ("e", "ok", 7)])
    part(tmp_path, "all-4-1", [("f", "failed", 8), ("f", "ok", 8), ("g", "ok", 9)])
    monkeypatch.setattr(partkeys, "RESAVE_ROWS", resave_rows)
    monkeypatch.setattr(compaction, "REWRITE_BATCH_ROWS", 1)
    read: list[list[str]] = []
    reading = compaction._rows_among

    def spy(path: Path, number: int, repeated: pl.Series) -> pl.DataFrame:
        rows = reading(path, number, repeated)
        read.append(sorted(rows["id"].to_list()))
        return rows

    monkeypatch.setattr(compaction, "_rows_among", spy)

    repeated = settle(tmp_path)
    assert repeated.to_list() == sorted(id_hashes(["b", "d", "f"]).to_list())
    assert compaction.compact(tmp_path, repeated) == 3
    assert read == [["b"], ["b", "d"], ["d"], ["f", "f"]]  # only rows of ids with several
    rows = read_columns(tmp_path, ["id", "status", "request_hash"]).to_pylist()
    assert sorted(tuple(row.values()) for row in rows) == [
        ("a", "ok", 1), ("b", "ok", 4), ("c", "ok", 3), ("d", "ok", 6), ("e", "ok", 7),
        ("f", "ok", 8), ("g", "ok", 9),
    ]  # fmt: skip
    layout = OutputLayout(tmp_path)
    for rewritten in ("all-1-1", "all-2-1", "all-4-1"):  # their keys written beside them
        path = layout.part(rewritten)
        stat = path.stat()
        signature = [path.name, stat.st_size, stat.st_mtime_ns, stat.st_ino]
        assert current_label(layout.part_keys(path), signature) is not None


@settings(max_examples=60, deadline=None)
@given(
    ids=st.sets(st.integers(0, 2**64 - 1), min_size=130, max_size=700),
    others=st.lists(st.integers(0, 2**64 - 1), max_size=50),
)
def test_a_lookup_in_mapped_keys_finds_exactly_the_ids_they_hold(
    ids: set[int], others: list[int]
) -> None:
    held = sorted(ids)
    batch = pa.record_batch(
        [pa.array(held, pa.uint64()), pa.array(held, pa.uint64()), pa.array([True] * len(held))],
        schema=KEYS_SCHEMA,
    )
    needles = np.array(sorted(held[::3] + others), np.uint64)

    present, requests, _, _ = MappedKeys(batch).look_up(needles)

    assert present.tolist() == [n in ids for n in needles.tolist()]
    assert requests[present].tolist() == needles[present].tolist()


def test_merging_keys_of_nearby_hashes_finds_an_id_in_two_runs() -> None:
    base = 2**62  # hashes a few apart: compared as floats, they would look equal

    def run(*batches: list[int]) -> Iterator[pl.DataFrame]:
        for ids in batches:
            yield pl.DataFrame(
                {"id_hash": ids, "request_hash": ids, "ok": [True] * len(ids), "age": 0},
                schema={**EMPTY, "age": pl.Int32},
            )

    merged: list[int] = []
    repeated = merge(
        [run([base, base + 10]), run([base + 5], [base + 10])],
        lambda keys: merged.extend(keys["id_hash"].to_list()),
    )

    assert merged == [base, base + 5, base + 10]
    assert repeated.to_list() == [base + 10]


def test_an_id_twice_in_one_part_is_seen_and_compacted(tmp_path: Path) -> None:
    written = part(tmp_path, "all-1-1", [("a", "failed", 1), ("a", "ok", 1), ("b", "ok", 2)])
    assert OutputKeys.load(tmp_path).has_repeated_ids

    Store(tmp_path, SCHEMA).open().close()

    ids = pq.read_table(written, columns=["id", "status"]).to_pylist()
    assert sorted((row["id"], row["status"]) for row in ids) == [("a", "ok"), ("b", "ok")]
    assert not OutputKeys.load(tmp_path).has_repeated_ids


def test_more_keys_files_than_merged_at_once_merge_in_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyruns, "MERGE_FAN_IN", 3)
    for number in range(1, 11):  # ten parts; a0 in the first (failed) and the last (ok)
        rows = [(f"a{number}", "failed" if number % 2 else "ok", number)]
        rows += {1: [("a0", "failed", 98)], 10: [("a0", "ok", 99)]}.get(number, [])
        part(tmp_path, f"all-{number}-1", rows)

    assert settle(tmp_path).to_list() == id_hashes(["a0"]).to_list()  # compaction's turn

    part(tmp_path, "all-10-1", [("a10", "ok", 10)])  # rewritten without a0
    assert settle(tmp_path).is_empty()
    keys = OutputKeys.load(tmp_path)
    assert keys.recent.is_empty() and saved_rows(keys) == 11
    assert look_up(keys, "a0", "a1", "a2") == [(True, 98, False), (True, 1, False), (True, 2, True)]
    assert keys.counts() == (5, 6)


def test_closing_waits_for_a_seal_under_way_and_a_failed_seal_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path, SCHEMA).open()
    row = {"id": "a", "model": "m", "status": "ok", "attempts": 1, "request_hash": 1}
    store.append(pa.Table.from_pylist([row], schema=SCHEMA))
    assert store.seal_later() is not None
    store.close()
    assert output_counts(tmp_path) == {"ok": 1, "failed": 0}

    store = Store(tmp_path, SCHEMA).open()
    store.append(pa.Table.from_pylist([{**row, "id": "b"}], schema=SCHEMA))

    def disk_full(journal: Path) -> None:
        raise OutputError(f"{journal}: cannot write a part (No space left on device)")

    monkeypatch.setattr(store, "seal_journal", disk_full)
    store.seal_later()
    with pytest.raises(OutputError, match="No space left"):
        store.close()
    monkeypatch.undo()

    Store(tmp_path, SCHEMA).open().close()  # the next run seals the journal left behind
    assert output_counts(tmp_path) == {"ok": 2, "failed": 0}


def test_a_few_new_keys_are_read_beside_the_saved_ones_until_a_rewrite_is_worth_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(partkeys, "RESAVE_ROWS", 3)
    part(tmp_path, "all-1-1", [("a", "ok", 1), ("b", "ok", 2)])
    Store(tmp_path, SCHEMA).open().close()
    store = Store(tmp_path, SCHEMA).open()
    for name in ("c", "d"):  # two rows in parts of their own: fewer than 3
        row = {"id": name, "model": "m", "status": "failed", "attempts": 1, "request_hash": 3}
        store.append(pa.Table.from_pylist([row], schema=SCHEMA))
        store.seal()

    store.close()

    assert saved_parts(tmp_path) == ["part-all-1-1.parquet"]  # not rewritten
    keys = OutputKeys.load(tmp_path)
    assert (saved_rows(keys), len(keys.recent)) == (2, 2) and keys.counts() == (2, 2)
    part(tmp_path, "all-9-1", [("e", "ok", 5)])  # a third: now worth it
    assert settle(tmp_path).is_empty()
    assert len(saved_parts(tmp_path)) == 4 and OutputLayout(tmp_path).part_keys_files() == []
