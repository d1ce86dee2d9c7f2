"""The ``batchrun`` command's error paths as an operator meets them: exit 2 with one line that
names the key, the file or the URL and the fix; never a traceback, never a secret. A full disk
is a real ENOSPC from the kernel (``/dev/full``) or the part writer made to raise it."""

from __future__ import annotations

import errno
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from batchrun.cli import main
from batchrun.errors import OutputError
from batchrun.output import store
from batchrun.output.layout import OutputLayout
from batchrun.output.query import MEMORY_ENV, Queries
from tests.support import batchrun, damaged_parquet, finish, finish_all, news_rows, write_job
from tests.support.outputs import read_columns

SECRET = "s3cr3t-hunter2"
NO_ROOM = OSError(errno.ENOSPC, "No space left on device")


def _full_disk(*args: Any, **kwargs: Any) -> None:
    raise NO_ROOM


def _full_temporary_file(**kwargs: Any) -> io.BufferedRandom:
    """An unnamed temporary file on a full disk: every write to /dev/full is ENOSPC."""
    return open("/dev/full", "w+b")


@pytest.fixture
def embed_job(make_job: Callable[..., Path]) -> Path:
    """An embeddings job on the bundled emulator: 20 rows in one request, a second's work."""
    return make_job(kind="embeddings")


def test_a_rerun_while_the_disk_is_still_full_exits_2_and_loses_nothing(
    embed_job: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(store, "write_batches", _full_disk)  # the disk fills up under the run
        assert main(["run", str(embed_job), "--no-progress"]) == 2
        assert main(["run", str(embed_job), "--no-progress"]) == 2  # still full: the journal
        err = capsys.readouterr().err  # left behind cannot be sealed
    assert err.count("error: out: cannot write a part: no space left on its disk; free some") == 2
    assert "Traceback" not in err
    assert OutputLayout(Path("out")).journals()  # the answers wait in it
    assert main(["run", str(embed_job), "--no-progress"]) == 0  # room again
    ids = read_columns(Path("out"), ["id"]).column("id").to_pylist()
    assert sorted(ids) == [row["id"] for row in news_rows(20)]


def test_status_while_the_disk_is_full_exits_2_naming_the_output(
    embed_job: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(embed_job), "--no-progress", "--limit", "5"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(tempfile, "TemporaryFile", _full_temporary_file)  # (the rows to do)

    assert main(["status", str(embed_job)]) == 2

    err = capsys.readouterr().err
    assert err.startswith("error: out: cannot write: no space left on its disk; free some space")
    assert err.endswith("run the same command again (what is done is kept)\n")


def test_a_bad_shared_limits_url_in_the_environment_is_refused_naming_the_variable(
    embed_job: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BATCHRUN_LIMITS_URL", f"redis://:{SECRET}@127.0.0.1:port/0")

    assert main(["run", str(embed_job), "--no-progress"]) == 2

    err = capsys.readouterr().err
    assert err.startswith("error: BATCHRUN_LIMITS_URL: its port is not a number from 0 to 65535")
    assert SECRET not in err


@pytest.fixture
def done_output(embed_job: Path) -> Iterator[Path]:
    """``embed_job`` run to its end: an output to report on and export."""
    assert main(["run", str(embed_job), "--no-progress"]) == 0
    yield embed_job


def test_export_on_a_full_disk_exits_2_and_leaves_no_half_file(
    done_output: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "replace", _full_disk)  # the finished file cannot be put in place

    assert main(["export", str(done_output), "--format", "jsonl", "--to", "exported"]) == 2

    err = capsys.readouterr().err
    assert err.startswith("error: exported: cannot write: no space left on its disk; free some")
    assert list(Path("exported").iterdir()) == []


def test_report_to_an_existing_directory_writes_report_html_in_it(
    done_output: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("reports").mkdir()

    assert main(["report", str(done_output), "--to", "reports"]) == 0

    assert capsys.readouterr().out == "wrote reports/report.html\n"
    assert "<svg" in Path("reports/report.html").read_text(encoding="utf-8")


def test_error_paths_print_one_line_and_no_traceback(done_output: Path) -> None:
    """Every command below fails for the operator's reason, in one line; run as children so
    that a traceback would reach their stderr."""
    job = str(done_output)
    Path("afile").write_text("")
    damaged_parquet(Path("news.parquet"), news_rows(12), compression="snappy")
    big = b'{"id": 1000000000000000000000000000000, "title": "t", "text": "x"}\n'
    Path("big.jsonl").write_bytes(big)
    creds = f'base_url = "http://ops:{SECRET}@127.0.0.1:9/v1"'
    variants = {
        "parquet": ('path = "news.jsonl"', 'path = "news.parquet"'),
        "big": ('path = "news.jsonl"', 'path = "big.jsonl"'),
        "shared": ("[run]", '[limits]\nshared = "redis//127.0.0.1:6379/0"\n[run]'),
        "creds": ('base_url = "local"', creds),
    }
    parquet, big_id, shared, with_creds = (
        _variant(done_output, n, *v) for n, v in variants.items()
    )
    line_break = {"SCIBOX_API_KEY": f"tok-{SECRET}\r\nX-Injected: 1"}
    cases: list[tuple[list[str], dict[str, str] | None, str]] = [
        (["report", job, "--to", "no/such/dir/r.html"], None, "the directory no/such/dir does"),
        (["export", job, "--format", "jsonl", "--to", "afile"], None, "--to afile: is a file; "),
        (["validate", parquet], None, "news.parquet: damaged Parquet data after row "),
        (["run", parquet], None, "news.parquet: damaged Parquet data after row "),
        (["validate", big_id], None, "big.jsonl:1: the id 1000000000000000000000000000000 is"),
        (["validate", shared], None, "[limits].shared: not a Redis URL (redis//127.0.0.1:6379"),
        (["run", with_creds], None, "[endpoint].base_url: http://***@127.0.0.1:9/v1 holds"),
        (["run", job], line_break, "SCIBOX_API_KEY: the API key holds a line break"),
        (["validate", job], line_break, "SCIBOX_API_KEY: the API key holds a line break"),
        (["models", job], line_break, "SCIBOX_API_KEY: the API key holds a line break"),
    ]
    children = [batchrun(*argv, env=env) for argv, env, _ in cases]
    for (argv, _, wanted), (code, _, err) in zip(cases, finish_all(children, 120), strict=True):
        assert (code, err.count("\n")) == (2, 1), (argv, err)
        assert err.startswith("error: ") and wanted in err, (argv, err)
        assert "Traceback" not in err and SECRET not in err, (argv, err)


def _variant(job: Path, name: str, old: str, new: str) -> str:
    """``job`` with ``old`` replaced by ``new`` and an output of its own, as NAME.toml."""
    body = job.read_text().replace(old, new).replace('path = "out"', f'path = "out-{name}"')
    return str(write_job(job.with_name(f"{name}.toml"), body))


def test_a_query_that_runs_out_of_memory_runs_again_on_one_thread_then_under_twice_the_limit(
    embed_job: Path,
) -> None:
    code, out, err = finish(batchrun("status", str(embed_job), env={MEMORY_ENV: "1MB"}))

    assert code == 0, err
    assert "0 ok, 0 failed, 20 left of 20 rows" in out
    assert err.splitlines()[:2] == [
        "note: a query ran out of memory under 1MB; running it again on one thread",
        "note: a query ran out of memory under 1MB; running it again under 2MB "
        f"(set {MEMORY_ENV}=2MB to start there)",
    ]


def test_a_query_engine_out_of_memory_past_its_raised_limits_exits_2_naming_the_variable(
    embed_job: Path,
) -> None:
    assert main(["run", str(embed_job), "--no-progress", "--limit", "5"]) == 0

    code, _, err = finish(batchrun("status", str(embed_job), env={MEMORY_ENV: "1KB"}))

    assert code == 2, err
    *notes, error = err.splitlines()
    assert notes[0].startswith("note: a query ran out of memory under 1KB; running it again")
    assert error.startswith("error: out: the query engine ran out of memory under ")
    assert error.endswith(
        f"times {MEMORY_ENV}=1KB); set it higher (for example {MEMORY_ENV}=2GB) and run again"
    )
    code, out, _ = finish(batchrun("status", str(embed_job)))  # the default limit
    assert code == 0, out


def test_a_query_that_keeps_running_out_goes_to_one_thread_then_doubles_up_to_16_times(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Queries, "multiple", 1)

    def runs_out() -> None:
        raise duckdb.OutOfMemoryException("Out of Memory Error: (a test)")

    with Queries(tmp_path) as queries, pytest.raises(OutputError) as caught:
        queries._retried(runs_out)

    steps = [line.split("; ")[1] for line in capsys.readouterr().err.splitlines()]
    assert steps == [
        "running it again on one thread",
        *(
            f"running it again under {size}MB (set {MEMORY_ENV}={size}MB to start there)"
            for size in (200, 400, 800, 1600)
        ),
    ]
    assert f"under 1600MB (16 times {MEMORY_ENV}=100MB)" in str(caught.value)
