"""Streaming input readers: which files a path names, and their rows as Records in batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun.errors import JobError
from batchrun.input.readers import Record, input_files, read_records
from batchrun.input.selection import TodoList
from tests.support import damaged_parquet, news_rows, write_jsonl


def read_all(
    files: list[Path], columns: tuple[str, ...] = ("id", "text"), **kw: int
) -> list[Record]:
    return [record for batch in read_records(files, "id", columns, **kw) for record in batch]


def read_error(files: list[Path], columns: tuple[str, ...] = ("id", "text")) -> str:
    with pytest.raises(JobError) as caught:
        read_all(files, columns)
    return str(caught.value)


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=3)
    return path


# input_files


def test_input_files_of_a_single_file(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "news.jsonl", news_rows(1))

    assert input_files("news.jsonl") == [Path("news.jsonl")]


def test_input_files_of_a_directory_lists_its_inputs_sorted(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "b.jsonl", news_rows(1))
    write_parquet(tmp_path / "data" / "a.parquet", news_rows(1))
    (tmp_path / "data" / "README.md").write_text("not an input")

    assert input_files("data") == [Path("data/a.parquet"), Path("data/b.jsonl")]


def test_input_files_of_an_empty_directory_is_a_job_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()

    with pytest.raises(JobError, match=r"'empty' holds no \.jsonl or \.parquet"):
        input_files("empty")


def test_input_files_of_a_glob_matches_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "data" / "2024").mkdir(parents=True)
    write_jsonl(tmp_path / "data" / "2024" / "b.jsonl", news_rows(1))
    write_jsonl(tmp_path / "data" / "a.jsonl", news_rows(1))

    assert input_files("data/**/*.jsonl") == [Path("data/2024/b.jsonl"), Path("data/a.jsonl")]
    assert input_files("data/*.jsonl") == [Path("data/a.jsonl")]


def test_glob_matching_nothing_names_the_pattern(tmp_path: Path) -> None:
    with pytest.raises(JobError) as caught:
        input_files("data/*.jsonl")

    assert str(caught.value) == "[input].path: the pattern 'data/*.jsonl' matches no file"


def test_missing_input_path_says_relative_to_where(tmp_path: Path) -> None:
    with pytest.raises(JobError) as caught:
        input_files("nope.jsonl")

    assert "'nope.jsonl' does not exist" in str(caught.value)
    assert str(tmp_path) in str(caught.value)


def test_a_file_that_is_not_jsonl_or_parquet_is_refused(tmp_path: Path) -> None:
    (tmp_path / "news.csv").write_text("id,text\n1,x\n")

    with pytest.raises(JobError, match=r"news.csv: not a .jsonl or .parquet file"):
        input_files("news.csv")


# JSONL


def test_jsonl_is_read_in_batches_of_records_holding_the_asked_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "news.jsonl", news_rows(5))

    batches = list(read_records([path], "id", ("id", "title"), batch_rows=2))

    assert [len(batch) for batch in batches] == [2, 2, 1]
    first = batches[0][0]
    assert first.id == "n00000"
    assert first.values == {"id": "n00000", "title": "Title 0"}
    assert first.where == f"{path}:1"


def test_blank_lines_are_skipped_but_counted_in_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "news.jsonl"
    path.write_bytes(b'\n{"id": "a", "text": "x"}\n   \n\n{"id": "b", "text": "y"}\n\n')

    records = read_all([path])

    assert [(r.id, r.line) for r in records] == [("a", 2), ("b", 5)]


def test_malformed_line_is_reported_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "news.jsonl"
    path.write_bytes(b'{"id": "a", "text": "x"}\n\n{"id": "b", "text": \n')

    message = read_error([path])

    assert message.startswith(f"{path}:3: not valid JSON")
    assert "fix or remove the line" in message


def test_line_that_is_not_an_object_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "news.jsonl"
    path.write_bytes(b'{"id": "a", "text": "x"}\n["b", "y"]\n')

    assert (
        read_error([path]) == f"{path}:2: expected a JSON object, got list; fix or remove the line"
    )


def test_non_utf8_bytes_are_a_job_error_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "news.jsonl"
    path.write_bytes(b'{"id": "a", "text": "x"}\n{"id": "b", "text": "caf\xe9"}\n')

    assert read_error([path]).startswith(f"{path}:2: not valid JSON")


@pytest.mark.parametrize("row", [{"text": "x"}, {"id": None, "text": "x"}, {"id": "", "text": "x"}])
def test_row_without_an_id_is_reported_with_its_line(tmp_path: Path, row: dict[str, Any]) -> None:
    path = write_jsonl(tmp_path / "news.jsonl", [{"id": "a", "text": "x"}, row])

    message = read_error([path])

    assert message.startswith(f"{path}:2: the id is ")
    assert "non-empty string or integer id" in message


def test_integer_ids_become_strings(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "news.jsonl", [{"id": 7, "text": "x"}, {"id": 0, "text": "y"}])

    assert [r.id for r in read_all([path])] == ["7", "0"]


def test_boolean_id_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "news.jsonl", [{"id": True, "text": "x"}])

    assert "the id is True" in read_error([path])


def test_missing_column_lists_the_columns_present(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "news.jsonl", news_rows(2))

    message = read_error([path], ("id", "body"))

    assert message.startswith(f"{path}: column 'body' not in the input (columns: id, title, text)")


def test_several_files_are_read_in_order_with_their_own_line_numbers(tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", news_rows(2))
    second = write_jsonl(tmp_path / "b.jsonl", news_rows(2, start=2))

    records = read_all([first, second])

    assert [(r.id, r.file.name, r.line) for r in records] == [
        ("n00000", "a.jsonl", 1),
        ("n00001", "a.jsonl", 2),
        ("n00002", "b.jsonl", 1),
        ("n00003", "b.jsonl", 2),
    ]


# Parquet


def test_parquet_is_read_in_batches_of_only_the_needed_columns(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "news.parquet", news_rows(5))

    batches = list(read_records([path], "id", ("id", "title"), batch_rows=2))

    records = [r for batch in batches for r in batch]
    assert [r.id for r in records] == [f"n{i:05d}" for i in range(5)]
    assert all(set(r.values) == {"id", "title"} for r in records)
    assert records[4].line == 5
    assert records[4].where == f"{path} row 5"
    assert max(len(batch) for batch in batches) <= 2


def test_parquet_missing_column_lists_the_columns_present(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "news.parquet", news_rows(2))

    message = read_error([path], ("id", "body"))

    assert message.startswith(f"{path}: column 'body' not in the input (columns: id, title, text)")


def test_parquet_null_id_is_reported_with_its_row(tmp_path: Path) -> None:
    path = write_parquet(
        tmp_path / "news.parquet", [{"id": "a", "text": "x"}, {"id": None, "text": "y"}]
    )

    assert read_error([path]).startswith(f"{path} row 2: the id is None")


def test_damaged_parquet_is_a_job_error(tmp_path: Path) -> None:
    path = tmp_path / "news.parquet"
    path.write_bytes(b"PAR1 this is not parquet")

    assert read_error([path]).startswith(f"{path}: not a readable Parquet file")


@pytest.mark.parametrize(
    "options",
    [
        {"compression": "snappy"},
        {"compression": "zstd"},
        {"compression": "none"},
        {"compression": "none", "write_page_checksum": True},
    ],
    ids=["snappy", "zstd", "plain", "checksummed"],
)
def test_damaged_parquet_page_is_a_job_error_naming_the_file(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    path = damaged_parquet(tmp_path / "news.parquet", news_rows(12), **options)

    message = read_error([path])

    assert message.startswith(f"{path}: damaged Parquet data after row ")
    assert message.endswith("write the file again from its source")


def test_an_integer_id_beyond_64_bits_is_shown_as_written(tmp_path: Path) -> None:
    path = tmp_path / "news.jsonl"
    path.write_bytes(
        b'{"id": "a", "text": "x"}\n{"id": 1000000000000000000000000000001, "text": "y"}\n'
    )

    message = read_error([path])

    assert message == (
        f"{path}:2: the id 1000000000000000000000000000001 is an integer beyond 64 bits (it "
        'would be read rounded); write it as a string: "1000000000000000000000000000001"'
    )
    assert "e+30" not in message


def test_a_float_id_is_shown_as_written(tmp_path: Path) -> None:
    path = tmp_path / "news.jsonl"
    path.write_bytes(b'{"id": 1.50, "text": "x"}\n')

    assert read_error([path]).startswith(f"{path}:1: the id is 1.50; every row needs")


def test_a_todo_list_reads_back_each_files_rows_in_order_and_leaves_no_file(
    tmp_path: Path,
) -> None:
    with TodoList(tmp_path) as todo:
        todo.add(0, pa.array([0, 10]), pa.array([1, 2]))
        todo.add(2, pa.array([5]), pa.array([7]))
        todo.add(0, pa.array([20]), pa.array([3]))  # a later frame of the index, file 0 again

        assert (todo.total, todo.count(0), todo.count(1), todo.count(2)) == (4, 3, 0, 1)
        assert list(todo.wanted(0)) == [(0, 1), (10, 2), (20, 3)]
        assert list(todo.wanted(1)) == []
        assert list(todo.wanted(2)) == [(5, 7)]
        assert todo.first(3).rows == {0: [(0, 1), (10, 2), (20, 3)]}
        assert list(tmp_path.iterdir()) == []  # unnamed: nothing to clean up after a kill
