"""OpenAI batch files as OpenAI, vLLM and LiteLLM write them: every bad line named, each bad
line a failed row with its reason under ``[input].bad_lines = "fail-line"``, and the export
checked against a copy of vLLM's own output models and OpenAI's documented error lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai.types
import openai.types.chat
import orjson
import pytest
from pydantic import BaseModel, ConfigDict, model_validator

import batchrun
from batchrun.errors import JobError
from batchrun.job.spec import load_job
from batchrun.report.export import export
from batchrun.report.overview import validate_lines
from tests.support import CODER, EMBEDDER, THINKER, news_chat_job, news_rows, write_jsonl

LIFTED = f'[models."{CODER}"]\nrps = 50\n[models."{THINKER}"]\nrps = 50\n'
JOB = '[input]\npath = "batch.jsonl"\nformat = "openai-batch"\n'
REST = '[params]\nmax_tokens = 40\n[output]\npath = "out"\n' + LIFTED


# --- copies of vLLM's output models (vllm/entrypoints/openai/run_batch.py), the bodies typed
# --- by the openai client's own models --------------------------------------------------------


class BatchResponseData(BaseModel):
    status_code: int = 200
    request_id: str
    body: openai.types.chat.ChatCompletion | openai.types.CreateEmbeddingResponse | None = None


class BatchRequestOutput(BaseModel):
    """The per-line object of the batch output and error files."""

    model_config = ConfigDict(extra="forbid")
    id: str
    custom_id: str
    response: BatchResponseData | None
    error: Any | None


# --- OpenAI's documented error-file line --------------------------------------------------------


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str
    type: str | None
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    error: ErrorDetail


class ErrorResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status_code: int
    request_id: str
    body: ErrorBody


class LineError(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str
    message: str


class ErrorLine(BaseModel):
    """A line of OpenAI's error file: the HTTP answer, or (none) a code and message."""

    model_config = ConfigDict(extra="forbid")
    id: str
    custom_id: str
    response: ErrorResponse | None
    error: LineError | None

    @model_validator(mode="after")
    def _one_of(self) -> ErrorLine:
        assert (self.response is None) != (self.error is None), "response or error, not both"
        return self


def chat_line(custom_id: object, text: str, **fields: Any) -> dict[str, Any]:
    messages = [
        {"role": "system", "content": "/no_think Be brief."},
        {"role": "user", "content": text},
    ]
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions"}
    return {**line, "body": {"model": CODER, "messages": messages}, **fields}


def good_lines(count: int) -> list[dict[str, Any]]:
    return [chat_line(f"req-{i}", f"Event {i} happened in town today.") for i in range(count)]


def write_lines(lines: list[dict[str, Any] | bytes]) -> None:
    text = b"".join(
        (line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines
    )
    Path("batch.jsonl").write_bytes(text)


def test_every_bad_line_of_a_batch_file_is_named_and_the_file_refused() -> None:
    lines: list[dict[str, Any] | bytes] = list(good_lines(80))
    lines[8] = {**chat_line("req-8", "x"), "url": "/v1/completions"}
    lines[39] = {k: v for k, v in chat_line("req-39", "x").items() if k != "custom_id"}
    lines[76] = {**chat_line("req-76", "x"), "body": "not an object"}
    write_lines(lines)
    Path("job.toml").write_text(JOB + REST)

    report, fit = validate_lines(load_job("job.toml"))
    with pytest.raises(JobError) as refused:
        batchrun.run("job.toml", progress=False)

    said = "\n".join(report)
    assert not fit
    for where in (
        "batch.jsonl:9 (url '/v1/completions': use '/v1/chat/completions'",
        "batch.jsonl:40 (no custom_id: give every line a unique string custom_id)",
        "batch.jsonl:77 (body is not a JSON object)",
    ):
        assert where in said and where in str(refused.value)
    assert "3 lines cannot be sent" in str(refused.value)
    assert 'bad_lines = "fail-line"' in str(refused.value)


def test_an_integer_custom_id_is_refused_naming_its_line() -> None:
    write_lines([*good_lines(2), chat_line(7, "Seven.")])
    Path("job.toml").write_text(JOB + REST)

    report, fit = validate_lines(load_job("job.toml"))

    assert not fit
    assert 'batch.jsonl:3 (custom_id 7 is a number: write it as a string, "7")' in "\n".join(report)


def test_litellm_and_azure_spellings_run_as_they_are() -> None:
    no_method = {
        k: v for k, v in chat_line("no-method", "No method given.").items() if k != "method"
    }
    short_url = {**chat_line("short-url", "Short url."), "url": "/chat/completions"}
    extra = {**chat_line("extra", "Extra fields."), "note": "kept aside"}
    write_lines([no_method, short_url, extra])
    Path("job.toml").write_text(JOB + REST)

    result = batchrun.run("job.toml", progress=False)

    assert result.ok and result.rows_ok == 3
    frame = batchrun.read(load_job("job.toml"))
    assert set(frame["url"]) == {"/v1/chat/completions"}


def vllm_test_file() -> list[dict[str, Any] | bytes]:
    """The cases of vLLM's run-batch tests and LiteLLM's files, among good lines."""
    embed = {"custom_id": "emb-1", "method": "POST", "url": "/v1/embeddings"}
    return [
        *good_lines(2),
        {**embed, "body": {"model": EMBEDDER, "input": "a passage about rivers"}},
        {**chat_line("bad-url", "x"), "url": "/v1/completions"},
        {**chat_line("streamed", "x"), "body": {**chat_line("s", "x")["body"], "stream": "True"}},
        {
            **chat_line("unknown-model", "x"),
            "body": {**chat_line("u", "x")["body"], "model": "nope"},
        },
        b'{"custom_id": "cut", "method": "POST", "url": "/v1/chat/com',
        chat_line(8, "An integer id."),
        chat_line("", "An empty id."),
        {**chat_line("rejected", "x"), "body": {**chat_line("r", "x")["body"], "max_tokens": -5}},
    ]


def test_fail_line_writes_each_bad_line_with_its_reason_and_runs_the_rest() -> None:
    write_lines(vllm_test_file())
    Path("job.toml").write_text(JOB + 'bad_lines = "fail-line"\n' + REST)

    report, fit = validate_lines(load_job("job.toml"))
    result = batchrun.run("job.toml", progress=False)
    export(load_job("job.toml"), "openai-batch", Path("x"))

    assert fit and "`run` writes each as a failed row with its reason" in "\n".join(report)
    assert (result.rows_ok, result.rows_failed) == (3, 7)
    answers = [BatchRequestOutput.model_validate_json(line) for line in read("x/output.jsonl")]
    assert sorted(a.custom_id for a in answers) == ["emb-1", "req-0", "req-1"]
    for answer in answers:  # vLLM's model, with the openai client's types for the bodies
        assert answer.response is not None and answer.response.request_id
        assert answer.response.status_code == 200 and answer.response.body is not None
    errors = {e.custom_id: e for e in map(ErrorLine.model_validate_json, read("x/errors.jsonl"))}
    assert sorted(errors) == sorted(
        ["bad-url", "streamed", "unknown-model", "batch.jsonl:7", "batch.jsonl:8",
         "batch.jsonl:9", "rejected"]
    )  # fmt: skip
    refused = {
        "bad-url": ("url", "url '/v1/completions': use '/v1/chat/completions'"),
        "streamed": ("body.stream", "a batch line is answered whole"),
        "unknown-model": ("body.model", "body.model 'nope': not served (it serves: "),
        "batch.jsonl:7": (None, "not valid JSON"),
        "batch.jsonl:8": ("custom_id", 'custom_id 8 is a number: write it as a string, "8"'),
        "batch.jsonl:9": ("custom_id", "custom_id '': a custom_id is a non-empty string"),
    }
    for custom_id, (param, reason) in refused.items():
        response = errors[custom_id].response
        assert response is not None and response.status_code == 400
        detail = response.body.error
        assert (detail.code, detail.param) == ("invalid_batch_line", param)
        assert reason in detail.message and "batch.jsonl:" in detail.message
    rejected = errors["rejected"].response
    assert rejected is not None and rejected.status_code == 400
    assert rejected.body.error.code == "invalid_request"  # the service's own code, kept
    assert "'max_tokens' must be a positive integer" in rejected.body.error.message


def read(path: str) -> list[bytes]:
    return Path(path).read_bytes().splitlines()


def test_an_unknown_model_stops_a_fail_file_run_before_any_request() -> None:
    write_lines(
        [
            *good_lines(1),
            {**chat_line("u", "x"), "body": {**chat_line("u", "x")["body"], "model": "nope"}},
        ]
    )
    Path("job.toml").write_text(JOB + REST)

    with pytest.raises(batchrun.FatalError, match=r"does not serve a line's body\.model = 'nope'"):
        batchrun.run("job.toml", progress=False)


def test_any_chat_job_exports_as_openai_batch_output() -> None:
    rows = news_rows(4)
    rows[2]["text"] = ""
    job = news_chat_job(rows, "Summarise:\n\n{text}")
    batchrun.run(job, progress=False)

    counts = export(job, "openai-batch", Path("x"))

    assert counts == {"output.jsonl": 3, "errors.jsonl": 1}
    frame = batchrun.read(job)
    for line in read("x/output.jsonl"):
        answer = BatchRequestOutput.model_validate_json(line)
        assert answer.response is not None
        body = answer.response.body
        assert isinstance(body, openai.types.chat.ChatCompletion)
        row = frame.filter(frame["id"] == answer.custom_id).row(0, named=True)
        assert body.choices[0].message.content == row["content"] and body.model == THINKER
        assert body.usage is not None and body.usage.prompt_tokens == row["prompt_tokens"]
    (failed,) = map(ErrorLine.model_validate_json, read("x/errors.jsonl"))
    assert failed.custom_id == rows[2]["id"] and failed.error is not None
    assert "column 'text' is empty" in failed.error.message


def test_an_embeddings_job_is_not_exported_as_openai_batch_output() -> None:
    write_jsonl(Path("texts.jsonl"), [{"id": "a", "text": "one"}])
    job = batchrun.Job.from_dict(
        {"kind": "embeddings", "model": EMBEDDER, "input": {"path": "texts.jsonl"},
         "output": {"path": "out"}}
    )  # fmt: skip
    batchrun.run(job, progress=False)

    with pytest.raises(JobError, match="embeddings job's output: use --format jsonl or csv"):
        export(job, "openai-batch", Path("x"))


def test_a_repeated_custom_id_is_refused_whatever_bad_lines_says() -> None:
    write_lines([*good_lines(3), chat_line("req-1", "Again.")])
    Path("job.toml").write_text(JOB + 'bad_lines = "fail-line"\n' + REST)

    with pytest.raises(JobError, match=r"'req-1' at batch\.jsonl:2, batch\.jsonl:4"):
        batchrun.run("job.toml", progress=False)


def test_bad_lines_is_a_key_of_batch_files_only() -> None:
    raw = {
        "kind": "chat",
        "model": THINKER,
        "prompt": {"user": "{text}"},
        "input": {"path": "x.jsonl", "bad_lines": "fail-line"},
        "output": {"path": "out"},
    }
    only = r'\[input\]\.bad_lines: only for \[input\]\.format = "openai-batch"'
    with pytest.raises(JobError, match=only):
        batchrun.Job.from_dict(raw)
