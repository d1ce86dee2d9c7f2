"""Interchange: OpenAI batch files in (bad lines named with their line numbers), OpenAI batch
output, JSONL and CSV out, and the Python API inside a running event loop."""

from __future__ import annotations

import asyncio
import csv
import os
import shutil
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import openai.types
import openai.types.chat
import orjson
import pytest

import batchrun
from batchrun.bench.processes import Emulator
from batchrun.emulator.summaries import summarise
from batchrun.emulator.vectors import embed
from batchrun.errors import JobError, OutputError
from batchrun.job.catalog import MODELS
from batchrun.job.spec import load_job
from batchrun.report.export import export
from batchrun.report.overview import validate_lines
from tests.support import CODER, EMBEDDER, THINKER, finish, news_rows, write_jsonl
from tests.support import batchrun as batchrun_child
from tests.support.waits import wait_for_a_part

BATCH_JOB = (
    '[input]\npath = "batch.jsonl"\nformat = "openai-batch"\n'
    "[params]\nmax_tokens = 60\n"
    '[output]\npath = "out"\npart_rows = 10\n'
    "[run]\nbackoff_base_s = 0.05\n"
)


def batch_lines() -> list[dict[str, Any]]:
    """50 chat lines over two models and 50 embeddings lines."""
    lines = []
    for i in range(50):
        text = f"Summarise:\n\nEvent {i} happened in town. The mayor spoke about event {i}."
        lines.append(
            {
                "custom_id": f"chat-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": THINKER if i % 2 else CODER,
                    "messages": [
                        {"role": "system", "content": "/no_think Be brief."},
                        {"role": "user", "content": text},
                    ],
                },
            }
        )
        body = {"model": EMBEDDER, "input": f"passage {i} about rivers"}
        lines.append(
            {"custom_id": f"emb-{i}", "method": "POST", "url": "/v1/embeddings", "body": body}
        )
    return lines


def bad_lines() -> list[dict[str, Any]]:
    chat = batch_lines()[0]
    return [
        {**chat, "custom_id": "bad-url", "url": "/v1/completions"},
        {**chat, "custom_id": "bad-body", "body": ["not", "an", "object"]},
        {**chat},  # chat-0 again
    ]


def test_bad_lines_of_a_batch_file_are_named_with_their_line_numbers() -> None:
    write_jsonl(Path("batch.jsonl"), batch_lines()[:10] + bad_lines())
    Path("job.toml").write_text(BATCH_JOB)
    job = load_job("job.toml")

    lines, fit = validate_lines(job)

    report = "\n".join(lines)
    assert not fit
    assert "'chat-0' at batch.jsonl:1, batch.jsonl:13" in report
    assert "batch.jsonl:11 (url '/v1/completions': use '/v1/chat/completions'" in report
    assert "batch.jsonl:12 (body is not a JSON object)" in report
    code, out, err = finish(batchrun_child("run", "job.toml", "--no-progress"))
    assert code == 2 and "chat-0" in err, (out, err)
    write_jsonl(Path("batch.jsonl"), batch_lines()[:10] + bad_lines()[:2])
    code, _, err = finish(batchrun_child("run", "job.toml", "--no-progress"))
    assert code == 2 and "2 lines cannot be sent" in err and "batch.jsonl:11" in err


def expected_body(line: dict[str, Any]) -> tuple[str, Any]:
    """What the emulator answers a line with: a chat's content, or an embedding's vector."""
    body = line["body"]
    if "messages" in body:
        messages = tuple((m["role"], m["content"]) for m in body["messages"])
        return "chat", summarise(MODELS[body["model"]], messages, 60).content  # as sent
    return "embedding", embed(body["input"])


@pytest.mark.serial
def test_a_batch_file_survives_a_kill_and_exports_as_openai_batch_output(
    emulator_dir: Path,
) -> None:
    lines = batch_lines()
    write_jsonl(Path("batch.jsonl"), lines)
    with Emulator(emulator_dir, rps_scale=5) as emulator:
        job = Path("job.toml")
        job.write_text(BATCH_JOB + f'[endpoint]\nbase_url = "{emulator.base_url}"\n')
        process = batchrun_child("run", "job.toml", "--no-progress")
        wait_for_a_part(Path("out"))
        process.send_signal(signal.SIGKILL)
        process.communicate()
        code, out, err = finish(batchrun_child("run", "job.toml", "--no-progress"))
    assert code == 0, err
    assert "unchanged" in out and not out.startswith("100 rows: 100 new")

    code, out, err = finish(
        batchrun_child("export", "job.toml", "--format", "openai-batch", "--to", "x")
    )

    assert code == 0, err
    answers = [orjson.loads(line) for line in Path("x/output.jsonl").read_bytes().splitlines()]
    errors = Path("x/errors.jsonl").read_bytes().splitlines()
    assert sorted(a["custom_id"] for a in answers) == sorted(line["custom_id"] for line in lines)
    assert not errors
    by_id = {line["custom_id"]: line for line in lines}
    for answer in answers:
        assert answer["error"] is None and answer["response"]["status_code"] == 200
        body = answer["response"]["body"]
        kind, expected = expected_body(by_id[answer["custom_id"]])
        if kind == "chat":
            parsed = openai.types.chat.ChatCompletion.model_validate(body)
            assert parsed.choices[0].message.content == expected
            assert parsed.model == by_id[answer["custom_id"]]["body"]["model"]
        else:
            vectors = openai.types.CreateEmbeddingResponse.model_validate(body)
            assert vectors.data[0].embedding == pytest.approx(expected, abs=1e-6)


async def test_the_python_api_runs_inside_a_running_event_loop() -> None:
    write_jsonl(Path("news.jsonl"), news_rows(6))
    job = batchrun.Job.from_dict(
        {
            "kind": "chat",
            "model": THINKER,
            "input": {"path": "news.jsonl"},
            "prompt": {"system": "/no_think Be brief.", "user": "Summarise:\n\n{text}"},
            "output": {"path": "out", "keep": ["title"]},
            "models": {THINKER: {"rps": 50}},
        }
    )

    result = batchrun.run(job, progress=False)  # this test's own loop is running

    assert result.ok and result.rows_ok == 6 and result.output == Path("out")
    assert result.prompt_tokens > 0 and result.summary["rows_ok"] == 6
    frame = batchrun.read(job)
    assert sorted(frame["id"].to_list()) == [row["id"] for row in news_rows(6)]
    assert set(frame["status"]) == {"ok"}
    again = batchrun.run(job, progress=False)
    assert again.rows_ok == 0 and again.rows_skipped == 6


def news_job(path: str, rows: int) -> batchrun.Job:
    write_jsonl(Path(f"{path}.jsonl"), news_rows(rows))
    return batchrun.Job.from_dict(
        {
            "kind": "chat",
            "model": THINKER,
            "input": {"path": f"{path}.jsonl"},
            "prompt": {"system": "/no_think Be brief.", "user": "Summarise:\n\n{text}"},
            "output": {"path": path},
            "models": {THINKER: {"rps": 50}},
        }
    )


async def test_arun_runs_two_jobs_at_once_in_one_event_loop(
    capsys: pytest.CaptureFixture[str],
) -> None:
    first, second = news_job("first", 5), news_job("second", 7)

    results = await asyncio.gather(
        batchrun.arun(first, progress=False), batchrun.arun(second, progress=False)
    )

    assert [r.rows_ok for r in results] == [5, 7] and all(r.ok for r in results)
    assert [r.output for r in results] == [Path("first"), Path("second")]
    assert "5 rows: 5 new" in results[0].text and "output first: 5 ok" in results[0].text
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == ""  # quiet means quiet
    again = await batchrun.arun(first, progress=False)
    assert again.rows_skipped == 5 and again.rows_ok == 0


def test_the_python_api_prints_its_summary_unless_quiet(
    capsys: pytest.CaptureFixture[str],
) -> None:
    job = news_job("news", 3)
    result = batchrun.run(job)
    shown = capsys.readouterr().out
    assert "output news: 3 ok, 0 failed" in shown and shown == result.text


def test_an_error_of_the_python_api_carries_no_event_loop_error() -> None:
    Path("job.toml").write_text(BATCH_JOB.replace("batch.jsonl", "missing.jsonl"))

    with pytest.raises(JobError, match="does not exist") as raised:
        batchrun.run("job.toml", progress=False)

    assert raised.value.__context__ is None and raised.value.__cause__ is None
    shown = "".join(traceback.format_exception(raised.value))
    assert "During handling of the above exception" not in shown and "RuntimeError" not in shown


def test_the_python_api_raises_the_packages_errors() -> None:
    with pytest.raises(JobError, match=r"<job>: \[run\].concurency: unknown key"):
        batchrun.Job.from_dict({"kind": "chat", "model": THINKER, "run": {"concurency": 2}})
    with pytest.raises(OutputError, match="no output yet"):
        batchrun.read(
            batchrun.Job.from_dict(
                {
                    "kind": "embeddings",
                    "model": EMBEDDER,
                    "input": {"path": "x.jsonl"},
                    "output": {"path": "nowhere"},
                }
            )
        )


def test_the_output_exports_as_jsonl_and_csv() -> None:
    rows = news_rows(12)
    write_jsonl(Path("news.jsonl"), rows)
    job = batchrun.Job.from_dict(
        {
            "kind": "embeddings",
            "model": EMBEDDER,
            "input": {"path": "news.jsonl"},
            "output": {"path": "out", "keep": ["title"]},
            "models": {EMBEDDER: {"rps": 50}},
        }
    )
    assert batchrun.run(job, progress=False).ok

    for name in ("jsonl", "csv"):
        export(job, name, Path(name))

    exported = [orjson.loads(line) for line in Path("jsonl/output.jsonl").read_bytes().splitlines()]
    with Path("csv/output.csv").open(newline="") as source:
        table = list(csv.DictReader(source))
    assert sorted(row["id"] for row in exported) == sorted(row["id"] for row in table)
    assert len(table) == 12 and {row["title"] for row in table} == {r["title"] for r in rows}
    texts = {row["id"]: row["text"] for row in rows}
    for row in exported:
        assert row["embedding"] == pytest.approx(embed(texts[row["id"]]), abs=1e-6)
    assert all(len(orjson.loads(row["embedding"])) == 1024 for row in table)


def test_a_batch_file_refuses_a_fallback_model() -> None:
    write_jsonl(Path("batch.jsonl"), batch_lines()[:2])
    Path("job.toml").write_text(BATCH_JOB + f'fallback_model = "{CODER}"\n')

    with pytest.raises(JobError, match=r"\[run\].fallback_model: .* to the model it names"):
        load_job("job.toml")


def test_an_output_an_interrupted_run_left_unsettled_is_not_read_or_exported() -> None:
    write_jsonl(Path("news.jsonl"), news_rows(4))
    job = batchrun.Job.from_dict(
        {
            "kind": "embeddings",
            "model": EMBEDDER,
            "input": {"path": "news.jsonl"},
            "output": {"path": "out"},
            "models": {EMBEDDER: {"rps": 50}},
        }
    )
    assert batchrun.run(job, progress=False).ok
    (part,) = Path("out").glob("part-*.parquet")
    shutil.copy(part, part.with_name("part-all-ffffffffffffffff-1.parquet"))  # ids twice

    with pytest.raises(OutputError, match="an id has rows in two parts"):
        batchrun.read(job)
    with pytest.raises(OutputError, match="an id has rows in two parts"):
        export(job, "jsonl", Path("x"))
    assert batchrun.run(job, progress=False).ok  # the next run settles it
    assert batchrun.read(job).height == 4


@pytest.mark.serial
def test_ctrl_c_in_a_script_stops_the_run_saves_it_and_raises(emulator_dir: Path) -> None:
    write_jsonl(Path("news.jsonl"), news_rows(40))
    with Emulator(emulator_dir, rps_scale=1, latency_s=0.5) as emulator:
        Path("job.toml").write_text(
            f'kind = "chat"\nmodel = "{THINKER}"\n[endpoint]\nbase_url = "{emulator.base_url}"\n'
            '[input]\npath = "news.jsonl"\n[prompt]\nuser = "Summarise:\\n\\n{text}"\n'
            '[output]\npath = "out"\npart_rows = 1\n[run]\ngrace_s = 5\n'
        )
        script = "import batchrun; batchrun.run('job.toml', progress=False)"
        process = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "SCIBOX_API_KEY": "t"},
        )  # fmt: skip
        wait_for_a_part(Path("out"))
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)

    assert process.returncode != 0 and "KeyboardInterrupt: job: interrupted" in err, err
    done = batchrun.read(load_job("job.toml"))
    assert 0 < done.height < 40 and set(done["status"]) == {"ok"}
