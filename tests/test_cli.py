"""The ``batchrun`` command as users meet it: exit codes, messages, files; runs in a
subprocess against an emulator process on 127.0.0.1, killed and resumed."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from batchrun.bench.processes import Emulator
from batchrun.cli import main
from batchrun.output.layout import OutputLayout
from tests.support import KEY, THINKER, batchrun, finish, news_rows, write_jsonl
from tests.support.outputs import read_columns
from tests.support.waits import (
    requests_admitted,
    wait_for_output,
    wait_until_loading,
    wait_until_sending,
)


@pytest.fixture
def emulator_url(emulator_dir: Path) -> Iterator[str]:
    with Emulator(emulator_dir, rps_scale=10) as emulator:
        yield emulator.base_url


def ids_in_output(path: str = "out") -> list[str]:
    ids: list[str] = read_columns(Path(path), ["id"]).column("id").to_pylist()
    return ids


def test_run_writes_every_row_and_prints_a_summary(
    make_job: Callable[..., Path], emulator_url: str
) -> None:
    job = make_job(base_url=emulator_url, rps=20)
    code, out, err = finish(batchrun("run", str(job)))
    assert code == 0, err
    assert sorted(ids_in_output()) == [row["id"] for row in news_rows(20)]
    assert "20 ok, 0 failed" in out
    assert OutputLayout(Path("out")).summary().exists()
    assert KEY not in out + err


def test_a_closed_stdout_ends_quietly_after_saving_rows_and_summary(
    make_job: Callable[..., Path], emulator_url: str
) -> None:
    job = make_job(base_url=emulator_url, rps=20)
    process = batchrun("run", str(job), "--no-progress")
    assert process.stdout is not None
    process.stdout.close()  # `batchrun run ... | head`: the reader is gone

    _, err = process.communicate(timeout=120)

    assert process.returncode == 141, err
    assert "Traceback" not in err
    assert sorted(ids_in_output()) == [row["id"] for row in news_rows(20)]
    assert OutputLayout(Path("out")).summary().exists()


@pytest.mark.serial
def test_sigkill_mid_run_then_rerun_gives_every_id_once(
    make_job: Callable[..., Path], emulator_url: str
) -> None:
    job = make_job(news_rows(120), base_url=emulator_url, rps=20, run="concurrency = 8")
    for requests in (20, 34, 12):  # killed after this many more were admitted: mid-run
        process = batchrun("run", str(job), "--no-progress")
        wait_until_sending(
            emulator_url, THINKER, requests_admitted(emulator_url, THINKER) + requests
        )
        process.send_signal(signal.SIGKILL)
        process.communicate()
    code, _, err = finish(batchrun("run", str(job), "--no-progress"))
    assert code == 0, err
    ids = ids_in_output()
    assert len(ids) == len(set(ids)) == 120


@pytest.mark.serial
def test_ctrl_c_writes_what_is_done_and_exits_130(
    make_job: Callable[..., Path], emulator_url: str
) -> None:
    job = make_job(news_rows(200), base_url=emulator_url, rps=20, run="grace_s = 5")
    process = batchrun("run", str(job), "--no-progress")
    wait_until_sending(emulator_url, THINKER, count=5)
    process.send_signal(signal.SIGINT)
    code, out, err = finish(process)
    assert code == 130, err
    assert "resume" in out
    done = len(ids_in_output())
    assert 0 < done < 200
    code, out, _ = finish(batchrun("run", str(job), "--no-progress"))
    assert code == 0
    assert f"{done} already done" in out
    assert sorted(ids_in_output()) == sorted(row["id"] for row in news_rows(200))


def test_wrong_token_exits_3_without_showing_it(
    make_job: Callable[..., Path], emulator_dir: Path
) -> None:
    with Emulator(emulator_dir, rps_scale=10, api_key="the-right-key") as emulator:
        job = make_job(base_url=emulator.base_url, rps=20)
        code, out, err = finish(batchrun("run", str(job)))
    assert code == 3
    assert "401" in err
    assert "set a valid token in the environment variable SCIBOX_API_KEY" in err
    assert KEY not in out + err
    assert "Traceback" not in err


def test_unreachable_endpoint_exits_3(make_job: Callable[..., Path]) -> None:
    job = make_job(base_url="http://127.0.0.1:9/v1", run="timeout_s = 2")
    code, _, err = finish(batchrun("run", str(job)))
    assert code == 3
    assert "cannot reach http://127.0.0.1:9/v1" in err
    assert "Traceback" not in err


def test_rows_that_fail_give_exit_1(make_job: Callable[..., Path], emulator_url: str) -> None:
    rows = [*news_rows(3), {"id": "empty", "title": "x", "text": ""}]
    code, out, _ = finish(batchrun("run", str(make_job(rows, base_url=emulator_url, rps=20))))
    assert code == 1
    assert "3 ok, 1 failed" in out


@pytest.mark.serial
def test_second_run_on_the_same_output_is_refused(
    make_job: Callable[..., Path], emulator_url: str
) -> None:
    job = make_job(news_rows(100), base_url=emulator_url, rps=20)
    first = batchrun("run", str(job), "--no-progress")
    wait_until_sending(emulator_url, THINKER)  # the first run holds the output
    code, _, err = finish(batchrun("run", str(job)))
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert code == 2
    assert f"pid {first.pid}" in err


def test_fresh_moves_the_old_output_aside(make_job: Callable[..., Path], emulator_url: str) -> None:
    job = make_job(news_rows(4), base_url=emulator_url, rps=20)
    assert finish(batchrun("run", str(job)))[0] == 0
    code, out, _ = finish(batchrun("run", str(job), "--fresh"))
    assert code == 0
    assert "moved the old output aside" in out
    assert len(list(Path(".").glob("out.old-*"))) == 1
    assert len(ids_in_output()) == 4


def test_validate_prints_the_plan(
    make_job: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(make_job())]) == 0
    out = capsys.readouterr().out
    assert "20 rows" in out
    assert "to do: 20 rows in 20 requests" in out
    assert "no less than 10 s" in out


def test_validate_reports_duplicate_ids_with_line_numbers(
    make_job: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [*news_rows(5), news_rows(1)[0], news_rows(3)[2]]
    assert main(["validate", str(make_job(rows))]) == 2
    out = capsys.readouterr().out
    assert "duplicate ids: 2" in out
    assert "'n00000' at news.jsonl:1, news.jsonl:6" in out
    assert "'n00002' at news.jsonl:3, news.jsonl:7" in out


def test_malformed_jsonl_is_reported_with_its_line_number(
    make_job: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    job = make_job()
    with Path("news.jsonl").open("ab") as file:
        file.write(b'{"id": "broken", "text": \n')
    for command in ("validate", "run"):
        assert main([command, str(job)]) == 2
        err = capsys.readouterr().err
        assert "news.jsonl:21: not valid JSON" in err


def test_missing_column_names_the_columns_there(
    make_job: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    write_jsonl(Path("other.jsonl"), [{"id": "1", "body": "x", "title": "t"}])
    job = make_job()
    job.write_text(job.read_text().replace("news.jsonl", "other.jsonl"))
    assert main(["validate", str(job)]) == 2
    err = capsys.readouterr().err
    assert "'text' not in the input (columns: id, body, title)" in err


def test_bad_job_file_lists_every_problem(capsys: pytest.CaptureFixture[str]) -> None:
    Path("bad.toml").write_text(
        'kind = "chat"\nmodel = "qwen3-32b-awq"\n[input]\npath = "x.jsonl"\n'
        '[output]\npath = "o"\n[run]\nconcurency = 3\n'
    )
    assert main(["run", "bad.toml"]) == 2
    err = capsys.readouterr().err
    assert "bad.toml: [run].concurency: unknown key; did you mean 'concurrency'?" in err
    assert "bad.toml: [prompt]: a chat job needs [prompt]" in err


def test_status_counts_from_the_output(
    make_job: Callable[..., Path], emulator_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    job = make_job(base_url=emulator_url, rps=20)
    assert finish(batchrun("run", str(job), "--limit", "5"))[0] == 0
    assert main(["status", str(job)]) == 0
    assert "5 ok, 0 failed, 15 left of 20 rows" in capsys.readouterr().out


def test_models_lists_the_local_emulators_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    assert capsys.readouterr().out.split() == [
        "bge-m3",
        "qwen3-32b-awq",
        "qwen3-coder-30b-a3b-instruct-fp8",
    ]


def test_run_refuses_duplicate_ids_and_an_empty_input_before_sending(
    make_job: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    job = make_job([*news_rows(3), news_rows(1)[0]], base_url="http://127.0.0.1:9/v1")
    assert main(["run", str(job)]) == 2
    assert "'n00000' at news.jsonl:1, news.jsonl:4" in capsys.readouterr().err
    Path("news.jsonl").write_text("\n\n")
    assert main(["run", str(job)]) == 2
    assert "holds no rows" in capsys.readouterr().err
    assert main(["validate", str(job)]) == 2
    assert "the input holds no rows" in capsys.readouterr().out


@pytest.mark.serial
@pytest.mark.parametrize("moment", ["loading", "planned", "sending"])
def test_ctrl_c_while_the_command_starts_exits_130_without_a_traceback(
    moment: str, make_job: Callable[..., Path], emulator_url: str
) -> None:
    """A stop while the command loads its libraries, once it has read the input and said
    what it will do, or once it is sending (a 10-s run at the catalog's 2 RPS)."""
    process = batchrun("run", str(make_job(base_url=emulator_url)), "--no-progress")
    if moment == "loading":
        wait_until_loading(process)
    elif moment == "planned":
        wait_for_output(process, "20 rows: 20 new")
    else:
        wait_until_sending(emulator_url, THINKER, count=3)
    process.send_signal(signal.SIGINT)
    code, out, err = finish(process)
    assert code == 130, err
    assert "Traceback" not in err
    assert "resume" in out + err
