"""A damaged output is repaired or loud, never silent: after each damage a ``run`` ends with
every input id exactly once, and ``status``, ``export`` and ``report`` say what they can
(exit 0) or name the damaged file (exit 2), never with a traceback."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import batchrun as batchrun_api
from batchrun.bench.processes import Emulator
from batchrun.cli import main
from batchrun.errors import OutputError
from batchrun.output.layout import OutputLayout
from tests.support import batchrun, finish, news_rows, write_jsonl

OUT = Path("out")
EVERY = sorted(row["id"] for row in news_rows(40))


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", "test-token")


@pytest.fixture
def emulator_url(emulator_dir: Path) -> Iterator[str]:
    with Emulator(emulator_dir, rps_scale=50) as emulator:
        yield emulator.base_url


@pytest.fixture
def job(make_job: Callable[..., Path], emulator_url: str) -> Path:
    """A job whose output holds two parts (20 rows each) and an input index of 40 rows."""
    path = make_job(news_rows(20), base_url=emulator_url, rps=100)
    assert run(path)[0] == 0
    write_jsonl(Path("news.jsonl"), news_rows(40))
    assert run(path)[0] == 0
    assert len(OutputLayout(OUT).parts()) == 2
    return path


def run(job: Path) -> tuple[int, str]:
    """``batchrun run JOB`` as users run it: its exit code and what it printed."""
    code, out, err = finish(batchrun("run", str(job), "--no-progress"))
    return code, out + err


def ids_in_parts() -> list[str]:
    ids: list[str] = []
    for part in OutputLayout(OUT).parts():
        ids += pq.read_table(part, columns=["id"]).column("id").to_pylist()
    return sorted(ids)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for at in range(len(data) // 3, len(data) // 3 + 16):
        data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def first_part() -> Path:
    return OutputLayout(OUT).parts()[0]


def rerun_and_look(
    job: Path, capsys: pytest.CaptureFixture[str], every: list[str] | None = None
) -> str:
    """Run the job again (every id exactly once after it), then status, export and report:
    exit 0 or 2, no traceback. What the run printed."""
    code, said = run(job)
    assert code == 0 and "Traceback" not in said, said
    assert ids_in_parts() == (every or EVERY)
    for command in (["status"], ["export", "--format", "jsonl", "--to", "exported"], ["report"]):
        code = main([command[0], str(job), *command[1:]])
        seen = capsys.readouterr()
        assert code in (0, 2) and "Traceback" not in seen.out + seen.err, command
    return said


@pytest.mark.parametrize("damage", [truncate, flip], ids=["truncated", "flipped bytes"])
def test_a_damaged_part_is_moved_aside_and_its_rows_done_again(
    job: Path, capsys: pytest.CaptureFixture[str], damage: Callable[[Path], None]
) -> None:
    part = first_part()
    damage(part)
    capsys.readouterr()
    for command in (["status"], ["export", "--format", "jsonl", "--to", "exported"]):
        assert main([command[0], str(job), *command[1:]]) == 2
        assert f"{part}: damaged" in capsys.readouterr().err
    said = rerun_and_look(job, capsys)
    assert f"{part}: damaged" in said and "moved aside" in said
    assert OutputLayout(OUT).damaged(part).exists()
    assert "20 new" in said


def test_a_part_damaged_after_it_was_verified_is_never_exported(
    job: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    part = first_part()
    stat = part.stat()
    flip(part)  # (as a disk might: the size and the time the part was written unchanged)
    os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    code = main(["export", str(job), "--format", "jsonl", "--to", "exported"])
    said = capsys.readouterr().err
    assert code == 2 and f"{part}: damaged" in said and "Traceback" not in said
    assert not Path("exported/output.jsonl").exists()
    for command in ("status", "report"):
        code = main([command, str(job)])
        seen = capsys.readouterr()
        assert code in (0, 2) and "Traceback" not in seen.out + seen.err, command
    with pytest.raises(OutputError, match="damaged"):
        batchrun_api.read(job)
    rerun_and_look(job, capsys)  # the run sets it aside and does its rows again
    assert len(batchrun_api.read(job)) == len(EVERY)


def test_a_part_whose_ids_were_damaged_after_it_was_verified_is_found_by_the_next_run(
    job: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    part = first_part()
    stat = part.stat()
    ids = pq.ParquetFile(part).metadata.row_group(0).column(0)  # (pages DuckDB reads)
    content = bytearray(part.read_bytes())
    start = ids.dictionary_page_offset + ids.total_compressed_size // 2
    content[start : start + 32] = bytes(byte ^ 0xFF for byte in content[start : start + 32])
    part.write_bytes(bytes(content))
    os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    code, said = run(job)
    assert code == 2 and "run the job again: it checks every part anew" in said, said
    assert "Traceback" not in said
    rerun_and_look(job, capsys)  # every id once: the part set aside, its rows done again


def test_a_deleted_part_has_its_rows_done_again(
    job: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first_part().unlink()
    assert "20 new" in rerun_and_look(job, capsys)


def test_status_over_parts_not_yet_compacted_counts_each_id_once(
    job: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Parts compaction has not seen (another shard's, or a lost ``_parts.json``): each id's
    winner is asked of a window query."""
    (state() / "_parts.json").unlink()
    capsys.readouterr()
    assert main(["status", str(job)]) == 0
    out = capsys.readouterr().out
    assert "40 rows: 0 new, 0 changed, 40 unchanged" in out and "40 ok" in out


BOOKKEEPING = [
    "_parts.json", "_input.json", "_input-index.parquet", "_job.json", "_output.json",
    "_summary.json", "_run-*.json", "_events-*.arrows",
]  # fmt: skip
"""Every file of the state directory a finished run leaves (the last two: one per run)."""


def state() -> Path:
    """The output's state directory (beside it: its bookkeeping files)."""
    return OutputLayout(OUT).state


@pytest.mark.parametrize("damage", [truncate, flip], ids=["truncated", "flipped bytes"])
@pytest.mark.parametrize("name", BOOKKEEPING)
def test_a_damaged_bookkeeping_file_is_made_again(
    job: Path, capsys: pytest.CaptureFixture[str], name: str, damage: Callable[[Path], None]
) -> None:
    files = sorted(state().glob(name))
    assert files, f"no {name} in {sorted(p.name for p in state().iterdir())}"
    for file in files:
        damage(file)
    said = rerun_and_look(job, capsys)
    assert "0 new, 0 changed, 40 unchanged" in said


def test_an_index_offset_out_of_step_is_caught_by_the_id_it_reads(
    job: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The index rewritten whole (its checksum made to fit) with one new row's offset
    pointing at another row: the row read there is checked against its id."""
    write_jsonl(Path("news.jsonl"), news_rows(41))
    assert main(["validate", str(job)]) == 0  # the index of 41 rows, remembered
    index = state() / "_input-index.parquet"
    table = pq.read_table(index)
    offsets, ids = table.column("offset").to_pylist(), table.column("id").to_pylist()
    offsets[ids.index("n00040")] = offsets[ids.index("n00003")]
    table = table.set_column(table.schema.get_field_index("offset"), "offset", [offsets])
    pq.write_table(table, index)
    _refit_checksum(index)
    code, said = run(job)
    assert code == 2 and "Traceback" not in said
    assert "puts id 'n00040' here, but the row holds 'n00003'" in said and "run again" in said
    assert run(job)[0] == 0
    assert ids_in_parts() == sorted(row["id"] for row in news_rows(41))


def _refit_checksum(index: Path) -> None:
    from batchrun.output.catalogue import read_checked, write_checked
    from batchrun.plan.kept_index import _signature

    remembered = read_checked(state() / "_input.json")
    assert remembered is not None
    write_checked(state() / "_input.json", {**remembered, "index": _signature(index)})


def test_lines_whose_first_hash_collides_are_told_apart_by_the_second(
    job: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every line's first 64-bit hash forced to one value while the index is made and made
    again for an edited input: no wrong entry is reused (the second hash tells the lines
    apart), the edited row is sent again and every id is done once."""
    import polars as pl

    real = pl.Series.hash

    def colliding(self: pl.Series, seed: int = 0, *args: object) -> pl.Series:
        hashes = real(self, seed)
        return hashes * 0 if seed == 0 else hashes

    rows = news_rows(41)
    rows[5]["text"] = "Edited overnight."
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pl.Series, "hash", colliding)
        (state() / "_input.json").unlink()
        assert main(["validate", str(job)]) == 0
        write_jsonl(Path("news.jsonl"), rows)
        capsys.readouterr()
        assert main(["status", str(job)]) == 0
        assert "41 rows: 1 new, 1 changed, 39 unchanged" in capsys.readouterr().out
    said = rerun_and_look(job, capsys, sorted(row["id"] for row in rows))
    assert "41 rows: 1 new, 1 changed, 39 unchanged" in said


def test_parts_named_by_a_clock_that_went_back_still_order_by_sequence(
    job: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next night's parts are named with an earlier time: the edited row's new answer
    wins all the same, and the night after sends nothing."""
    monkeypatch.setattr(time, "time_ns", lambda: 1)  # (the parts' names: layout.new_token)
    rows = news_rows(40)
    rows[7]["text"] = "Edited after the clock went back."
    write_jsonl(Path("news.jsonl"), rows)
    assert "1 changed" in rerun_and_look(job, capsys)
    table = pq.read_table(OutputLayout(OUT).parts(), columns=["id", "content"])
    edited = table.filter(pc.equal(table["id"], "n00007"))["content"].to_pylist()
    assert len(edited) == 1 and "clock went back" in edited[0]
    assert "0 new, 0 changed, 40 unchanged" in rerun_and_look(job, capsys)
    assert os.path.getsize(state() / "_parts.json") > 0
