"""The output directory: parts that appear whole, a journal that survives a kill, the lock,
and the job's identity."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun.errors import OutputError
from batchrun.job.shards import Shard
from batchrun.output.archive import Archive
from batchrun.output.identity import FORMAT_VERSION, Identity, check_identity
from batchrun.output.layout import OutputLayout, read_json
from batchrun.output.parts import DamagedPart, check_part, sequence_of, write_batches
from batchrun.output.rows import REQUEST_HASH, answer_fields, output_schema, rows_to_table
from batchrun.output.store import Store, move_aside
from batchrun.output.streams import whole_batches
from batchrun.version import VERSION
from tests.support.outputs import SCHEMA, abandon, ids, read_columns, rows


def journals(path: Path) -> list[Path]:
    return OutputLayout(path).journals()


def test_append_then_close_makes_one_readable_part_with_all_rows(tmp_path: Path) -> None:
    out = tmp_path / "out"
    store = Store(out, SCHEMA).open()
    store.append(rows(0, 3))
    store.append(rows(3, 4))
    assert store.rows_in_journal == 7

    store.close()

    [part] = OutputLayout(out).parts()
    table = pq.read_table(part)
    assert table.schema == SCHEMA
    assert table.column("id").to_pylist() == [f"n{i:05d}" for i in range(7)]
    assert table.column("content").to_pylist()[6] == "Summary 6."
    assert journals(out) == []
    assert not list(out.glob(".part-*.tmp"))


def test_appending_nothing_writes_no_part(tmp_path: Path) -> None:
    store = Store(tmp_path / "out", SCHEMA).open()
    store.append(rows(0, 0))
    store.close()

    assert OutputLayout(tmp_path / "out").parts() == []


def test_each_seal_adds_a_part_and_readers_see_them_all(tmp_path: Path) -> None:
    out = tmp_path / "out"
    store = Store(out, SCHEMA).open()
    store.append(rows(0, 2))
    store.seal()
    store.append(rows(2, 2))
    store.close()

    assert len(OutputLayout(out).parts()) == 2
    assert ids(out) == [f"n{i:05d}" for i in range(4)]


def test_journal_of_a_killed_run_is_sealed_by_the_next_open(tmp_path: Path) -> None:
    out = tmp_path / "out"
    killed = Store(out, SCHEMA).open()
    killed.append(rows(0, 3))
    killed.append(rows(3, 2))
    abandon(killed)
    assert OutputLayout(out).parts() == []
    assert len(journals(out)) == 1

    Store(out, SCHEMA).open().close()

    assert ids(out) == [f"n{i:05d}" for i in range(5)]
    assert len(OutputLayout(out).parts()) == 1
    assert journals(out) == []


def test_journal_with_a_torn_tail_keeps_its_whole_batches(tmp_path: Path) -> None:
    out = tmp_path / "out"
    killed = Store(out, SCHEMA).open()
    killed.append(rows(0, 3))
    killed.append(rows(3, 3))
    abandon(killed)
    [journal] = journals(out)
    os.truncate(journal, journal.stat().st_size - 40)  # the last batch was half written

    Store(out, SCHEMA).open().close()

    assert ids(out) == [f"n{i:05d}" for i in range(3)]


def test_journal_with_a_changed_byte_keeps_only_the_batches_before_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    killed = Store(out, SCHEMA).open()
    for start in (0, 3, 6):
        killed.append(rows(start, 3))
    abandon(killed)
    [journal] = journals(out)
    content = journal.read_bytes()
    assert content.count(b"Summary 4.") == 1
    journal.write_bytes(content.replace(b"Summary 4.", b"Summery 4."))  # still valid Arrow

    Store(out, SCHEMA).open().close()

    assert ids(out) == [f"n{i:05d}" for i in range(3)]  # the rest is sent again, not trusted
    assert (
        "damaged (a batch is not valid or does not match its checksum)" in capsys.readouterr().err
    )


def test_no_changed_byte_of_a_journal_is_read_as_rows(tmp_path: Path) -> None:
    """Each byte of a journal of vectors changed in turn: what is read back is always the
    first few batches as written, never a changed row (and never a crash)."""
    schema = pa.schema(
        [("id", pa.string()), ("embedding", pa.list_(pa.float32())), ("status", pa.string()),
         REQUEST_HASH]
    )  # fmt: skip
    killed = Store(tmp_path / "out", schema).open()
    written = []
    for start in (0, 3):
        vectors = [
            {"id": f"n{i}", "embedding": np.full(3, i, np.float32).tobytes(), "status": "ok",
             "request_hash": i}
            for i in range(start, start + 3)
        ]  # fmt: skip
        written.append(rows_to_table(vectors, schema).to_batches()[0])
        killed.append(pa.Table.from_batches(written[-1:]))
    abandon(killed)
    [journal] = journals(tmp_path / "out")
    content = journal.read_bytes()
    for at in range(len(content)):
        for change in (0x01, 0xFF):
            changed = bytearray(content)
            changed[at] ^= change
            journal.write_bytes(bytes(changed))
            read = list(whole_batches(journal))
            assert len(read) <= 2 and all(
                batch.equals(written[n]) for n, batch in enumerate(read)
            ), (at, change)


PART_STRIDE = 13
"""Every how many bytes of a part one is changed (each, two ways): about 700 cases."""


def test_no_changed_byte_of_a_part_passes_its_check_as_other_rows(tmp_path: Path) -> None:
    """Bytes of a part changed in turn (pages, page headers, the footer that no checksum
    covers): the part's check finds the damage, or the rows, the sequence number and what
    DuckDB answers over the part (it trusts the footer's statistics) are all as written."""
    store = Store(tmp_path / "out", SCHEMA).open()
    failed = rows(20, 10).to_pylist()
    for row in failed:
        row.update(status="failed", content=None, error="503", request_hash=row["attempts"])
    store.append(rows(0, 20))
    store.append(pa.Table.from_pylist(failed, schema=SCHEMA))
    store.close()
    [part] = OutputLayout(tmp_path / "out").parts()
    content, written = part.read_bytes(), pq.read_table(part)
    changed = tmp_path / "changed" / part.name
    changed.parent.mkdir()
    asked = (
        "SELECT count(*) FILTER (WHERE status = 'ok'), count(*) FILTER (WHERE id = 'n00025'), "
        "count(*) FILTER (WHERE request_hash = 1) FROM read_parquet($part)"
    )
    for at in range(0, len(content), PART_STRIDE):
        for change in (0x01, 0xFF):
            damaged = bytearray(content)
            damaged[at] ^= change
            changed.write_bytes(bytes(damaged))
            try:
                check_part(changed)
            except DamagedPart:
                continue
            assert pq.read_table(changed).equals(written), (at, change)
            assert sequence_of(changed) == 1, (at, change)
            answer = duckdb.execute(asked, {"part": str(changed)}).fetchall()
            assert answer == [(20, 1, 10)], (at, change)


def test_answers_reused_from_a_damaged_part_are_never_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    store = Store(out, SCHEMA).open()
    for start in (0, 10):
        answered = rows(start, 10).to_pylist()
        for number, row in enumerate(answered, start):
            row["request_hash"] = number
        store.append(pa.Table.from_pylist(answered, schema=SCHEMA))
        store.seal()
    store.close()
    damaged = OutputLayout(out).parts()[0]
    content = bytearray(damaged.read_bytes())
    content[len(content) // 3 : len(content) // 3 + 16] = bytes(16)
    damaged.write_bytes(bytes(content))

    found = Archive(out).find(range(20), ["content"])

    assert sorted(found) == list(range(10, 20))  # the other part's answers only
    assert found[12] == {"content": "Summary 12."}
    assert not damaged.exists() and "damaged" in capsys.readouterr().err


def test_good_parts_pass_their_check(tmp_path: Path) -> None:
    """What once read as damage: an ``id`` field nested in an answer or a kept column, an id
    of more than 4 kB (pyarrow writes no min or max for it), columns whose types read back
    in another unit or encoding."""
    nested = pa.struct([("id", pa.int64())])
    schema = output_schema(
        {"doc": nested, "at": pa.timestamp("s"), "tag": pa.dictionary(pa.int8(), pa.string())},
        answer_fields(pa.field("entities", pa.list_(nested))),
    )
    answered = [
        {"id": "k" * 5000 if i == 0 else f"n{i}", "doc": {"id": i}, "at": None, "tag": "t",
         "model": "m", "entities": [{"id": i}], "status": "ok", "request_hash": i}
        for i in range(3)
    ]  # fmt: skip
    table = rows_to_table(answered, schema)
    part = tmp_path / "part-all-1-1.parquet"
    write_batches(part, schema, table.to_batches(), 1)
    check_part(part)  # (DamagedPart would fail the test)
    pq.write_table(table, part)  # as the bench and older versions write parts
    check_part(part)


def test_journal_torn_inside_its_first_batch_leaves_no_part(tmp_path: Path) -> None:
    out = tmp_path / "out"
    killed = Store(out, SCHEMA).open()
    killed.append(rows(0, 3))
    abandon(killed)
    [journal] = journals(out)
    os.truncate(journal, journal.stat().st_size - 40)

    Store(out, SCHEMA).open().close()

    assert OutputLayout(out).parts() == []
    assert journals(out) == []


def test_journal_whose_part_exists_is_not_sealed_twice(tmp_path: Path) -> None:
    out = tmp_path / "out"
    killed = Store(out, SCHEMA).open()
    killed.append(rows(0, 4))
    abandon(killed)
    [journal] = journals(out)
    kept = journal.read_bytes()
    Store(out, SCHEMA).open().close()
    journal.write_bytes(kept)  # killed after the part was renamed, before the journal's unlink

    Store(out, SCHEMA).open().close()

    assert ids(out) == [f"n{i:05d}" for i in range(4)]
    assert len(OutputLayout(out).parts()) == 1
    assert journals(out) == []


def test_leftover_temporary_part_is_removed_on_open(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".part-x.tmp").write_bytes(b"half a parquet file")

    Store(out, SCHEMA).open().close()

    assert not (out / ".part-x.tmp").exists()
    assert read_columns(out, ["id"]).num_rows == 0


def test_a_leftover_part_that_cannot_be_removed_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".part-x.tmp").write_bytes(b"half a parquet file")

    unlink = Path.unlink

    def refused(path: Path, missing_ok: bool = False) -> None:
        if path.name == ".part-x.tmp":
            raise PermissionError(13, "Permission denied", str(path))
        unlink(path, missing_ok)

    monkeypatch.setattr(Path, "unlink", refused)
    with pytest.raises(OutputError, match=r"\.part-x\.tmp: cannot remove this unfinished part"):
        Store(out, SCHEMA).open()


def test_second_open_of_a_locked_output_names_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = Store(out, SCHEMA).open()
    try:
        with pytest.raises(OutputError) as caught:
            Store(out, SCHEMA).open()
    finally:
        first.close()

    message = str(caught.value)
    assert f"pid {os.getpid()} on {socket.gethostname()}" in message
    assert "another run is writing this output" in message
    Store(out, SCHEMA).open().close()  # free again after close


def test_lock_and_journal_of_a_dead_process_are_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from pathlib import Path
        from tests.support.outputs import SCHEMA, rows
        from batchrun.output.store import Store
        store = Store(Path({str(out)!r}), SCHEMA).open()
        store.append(rows(0, 5))
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert "pid" in OutputLayout(out).lock().read_text()
    assert OutputLayout(out).parts() == []

    store = Store(out, SCHEMA).open()
    store.append(rows(5, 1))
    store.close()

    assert ids(out) == [f"n{i:05d}" for i in range(6)]
    assert f"pid {os.getpid()} " in OutputLayout(out).lock().read_text()


def test_output_that_cannot_be_created_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")

    with pytest.raises(OutputError, match="cannot create the output directory"):
        Store(tmp_path / "file" / "out", SCHEMA).open()


def test_check_identity_records_the_job_on_first_use(tmp_path: Path) -> None:
    out = tmp_path / "out"

    check_identity(out, Identity("digest", "chat", "abc123"))

    assert read_json(OutputLayout(out).job_file) == {
        "name": "digest",
        "kind": "chat",
        "fingerprint": "abc123",
        "format": FORMAT_VERSION,
        "written_by": f"batchrun {VERSION}",
    }


def test_check_identity_refuses_other_requests_when_parts_exist(tmp_path: Path) -> None:
    out = tmp_path / "out"
    check_identity(out, Identity("digest", "chat", "abc123"))
    store = Store(out, SCHEMA).open()
    store.append(rows(0, 1))
    store.close()

    check_identity(out, Identity("digest", "chat", "abc123"))  # the same job resumes
    with pytest.raises(OutputError) as caught:
        check_identity(out, Identity("digest", "chat", "def456"))

    assert "holds 1 rows of job 'digest' made with other requests" in str(caught.value)
    assert "--redo" in str(caught.value) and "--fresh" in str(caught.value)
    assert "--fresh" in str(caught.value)


def test_check_identity_takes_the_new_fingerprint_when_no_part_exists(tmp_path: Path) -> None:
    out = tmp_path / "out"
    check_identity(out, Identity("digest", "chat", "abc123"))

    check_identity(out, Identity("digest", "chat", "def456"))

    assert read_json(OutputLayout(out).job_file)["fingerprint"] == "def456"  # type: ignore[index]


def test_move_aside_renames_the_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    store = Store(out, SCHEMA).open()
    store.append(rows(0, 2))
    store.close()

    aside = move_aside(out)

    assert aside is not None
    assert aside.parent == tmp_path
    assert aside.name.startswith("out.old-")
    assert not out.exists()
    assert ids(aside) == ["n00000", "n00001"]


def test_move_aside_with_nothing_to_move_returns_none(tmp_path: Path) -> None:
    assert move_aside(tmp_path / "missing") is None
    (tmp_path / "empty").mkdir()
    assert move_aside(tmp_path / "empty") is None


def test_move_aside_refuses_while_a_run_holds_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "out"
    store = Store(out, SCHEMA).open()
    try:
        with pytest.raises(OutputError, match="another run is writing this output"):
            move_aside(out)
    finally:
        store.close()

    assert out.exists()


def test_read_columns_of_an_empty_or_missing_output_is_an_empty_table(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()

    for path in (tmp_path / "empty", tmp_path / "missing"):
        table = read_columns(path, ["id", "status"])
        assert table.num_rows == 0
        assert table.column_names == ["id", "status"]


def test_read_json_of_a_missing_file_is_none(tmp_path: Path) -> None:
    assert read_json(tmp_path / "_summary.json") is None


def test_a_shard_seals_the_journal_a_killed_whole_run_left(tmp_path: Path) -> None:
    out = tmp_path / "out"
    killed = Store(out, SCHEMA).open()
    killed.append(rows(0, 3))
    abandon(killed)

    Store(out, SCHEMA, Shard(1, 2)).open().close()

    assert ids(out) == [f"n{i:05d}" for i in range(3)]
    assert journals(out) == []


def test_a_live_shards_journal_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    live = Store(out, SCHEMA, Shard(2, 2)).open()
    live.append(rows(0, 3))

    Store(out, SCHEMA, Shard(1, 2)).open().close()

    assert len(journals(out)) == 1  # still being written by shard 2
    live.close()
    assert ids(out) == [f"n{i:05d}" for i in range(3)]
