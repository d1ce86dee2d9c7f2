"""``batchrun serve`` driven by the official ``openai`` client: files, batches through their
lifecycle, output and error files line by line, keys, bad input answered as OpenAI does."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from batchrun.bench.processes import Emulator
from batchrun.bench.serving import Serve
from tests.servesupport import (
    batch_file,
    chat_line,
    client,
    embed_line,
    lines_of,
    served,
    submit,
    wait_for,
)
from tests.support import batchrun, finish


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Emulator, Serve]]:
    with served(tmp_path_factory.mktemp("serve")) as both:
        yield both


def test_chat_batch_completes_with_every_custom_id_once(
    server: tuple[Emulator, Serve], tmp_path: Path
) -> None:
    api = client(server[1])
    batch = submit(api, batch_file(tmp_path / "chat.jsonl", [chat_line(i) for i in range(40)]))
    assert batch.status == "validating" and batch.object == "batch"
    done = wait_for(api, batch.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (40, 40)
    assert done.error_file_id is None and done.in_progress_at and done.completed_at
    lines = lines_of(api, done.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"req-{i}" for i in range(40))
    for line in lines:
        assert line["id"] == f"batch_req_{line['custom_id']}" and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"]
        answer = ChatCompletion.model_validate(line["response"]["body"])
        number = line["custom_id"].removeprefix("req-")
        assert f"Item {number} was found" in (answer.choices[0].message.content or "")


def test_a_batch_is_a_job_that_report_and_status_read(
    server: tuple[Emulator, Serve], tmp_path: Path
) -> None:
    api = client(server[1])
    done = wait_for(api, submit(api, batch_file(tmp_path / "r.jsonl", [chat_line(1)])).id)
    job = server[1].workdir / "state" / "batches" / done.id / "job.toml"
    code, out, err = finish(batchrun("status", str(job)))
    assert code == 0 and "1 ok" in out, err
    code, out, err = finish(batchrun("report", str(job), "--to", str(tmp_path / "r.html")))
    assert code == 0 and (tmp_path / "r.html").stat().st_size > 1000, err


def test_embeddings_batch_gives_a_vector_per_line(
    server: tuple[Emulator, Serve], tmp_path: Path
) -> None:
    api = client(server[1])
    path = batch_file(tmp_path / "embed.jsonl", [embed_line(i) for i in range(30)])
    done = wait_for(api, submit(api, path, "/v1/embeddings").id)
    assert done.status == "completed", done
    lines = lines_of(api, done.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"emb-{i}" for i in range(30))
    for line in lines:
        vectors = CreateEmbeddingResponse.model_validate(line["response"]["body"])
        assert len(vectors.data[0].embedding) == 1024


def test_bad_lines_fail_the_batch_naming_every_one(
    server: tuple[Emulator, Serve], tmp_path: Path
) -> None:
    api = client(server[1])
    path = tmp_path / "bad.jsonl"
    good = [chat_line(i) for i in range(6)]
    wrong_url = chat_line(10, url="/v1/embeddings")
    no_model = chat_line(11)
    del no_model["body"]["model"]
    rows = [_line(good[0]), b"{not json\n", _line(good[1]), _line(wrong_url), _line(good[1])]
    path.write_bytes(b"".join([*rows, _line(no_model), _line(good[2])]))
    done = wait_for(api, submit(api, path).id)
    assert done.status == "failed" and done.failed_at and done.errors and done.errors.data
    found = {(error.line, error.code) for error in done.errors.data}
    assert found == {
        (2, "invalid_json_line"),
        (4, "invalid_url"),
        (5, "duplicate_custom_id"),
        (6, "invalid_request"),
    }


def _line(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row) + b"\n"


def test_a_key_sees_only_its_own_files_and_batches(
    server: tuple[Emulator, Serve], tmp_path: Path
) -> None:
    mine, theirs = client(server[1], "key-a"), client(server[1], "key-b")
    batch = submit(mine, batch_file(tmp_path / "a.jsonl", [chat_line(0)]))
    with pytest.raises(openai.NotFoundError):
        theirs.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        theirs.files.retrieve(batch.input_file_id)
    with pytest.raises(openai.NotFoundError):
        theirs.files.content(batch.input_file_id)
    with pytest.raises(openai.NotFoundError):
        theirs.batches.cancel(batch.id)
    assert batch.id not in [b.id for b in theirs.batches.list()]
    assert batch.input_file_id not in [f.id for f in theirs.files.list()]
    assert batch.id in [b.id for b in mine.batches.list()]
    with pytest.raises(openai.AuthenticationError) as missing:
        client(server[1], "not-a-key").batches.list()
    assert missing.value.status_code == 401 and "not-a-key" not in str(missing.value.body)


def test_files_round_trip_and_are_deleted(server: tuple[Emulator, Serve], tmp_path: Path) -> None:
    api = client(server[1])
    path = batch_file(tmp_path / "round.jsonl", [chat_line(i) for i in range(3)])
    with path.open("rb") as source:
        uploaded = api.files.create(file=source, purpose="batch")
    assert uploaded.bytes == path.stat().st_size and uploaded.filename == "round.jsonl"
    assert api.files.retrieve(uploaded.id).purpose == "batch"
    assert api.files.content(uploaded.id).content == path.read_bytes()
    assert uploaded.id in [f.id for f in api.files.list(purpose="batch")]
    assert api.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        api.files.retrieve(uploaded.id)


def test_bad_requests_get_openai_errors(server: tuple[Emulator, Serve], tmp_path: Path) -> None:
    api = client(server[1])
    with pytest.raises(openai.NotFoundError) as unknown:
        api.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert unknown.value.body is not None
    with (tmp_path / "x.jsonl").open("wb") as sink:
        sink.write(_line(chat_line(0)))
    with (tmp_path / "x.jsonl").open("rb") as source:
        not_batch = api.files.create(file=source, purpose="user_data")
    with pytest.raises(openai.BadRequestError) as purpose:
        api.batches.create(
            input_file_id=not_batch.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert purpose.value.param == "input_file_id"
    with pytest.raises(openai.BadRequestError) as window:
        api.batches.create(
            input_file_id=not_batch.id, endpoint="/v1/chat/completions",
            completion_window="1h",  # type: ignore[arg-type]
        )  # fmt: skip
    assert window.value.param == "completion_window"
    done = wait_for(api, submit(api, tmp_path / "x.jsonl").id)
    with pytest.raises(openai.ConflictError) as finished:
        api.batches.cancel(done.id)
    assert "completed" in str(finished.value)


def test_passthrough_and_metrics(server: tuple[Emulator, Serve]) -> None:
    api = client(server[1])
    assert "qwen3-32b-awq" in [m.id for m in api.models.list()]
    answer = api.chat.completions.create(
        model="qwen3-32b-awq", messages=[{"role": "user", "content": "The sea is calm."}]
    )
    assert "The sea is calm." in (answer.choices[0].message.content or "")
    vectors = api.embeddings.create(model="bge-m3", input=["one", "two"])
    assert len(vectors.data) == 2
    streamed = api.chat.completions.create(
        model="qwen3-32b-awq", messages=[{"role": "user", "content": "Rain."}], stream=True
    )
    assert "Rain." in "".join(
        chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices
    )

    metrics_url = server[1].base_url.removesuffix("/v1") + "/metrics"
    with urllib.request.urlopen(metrics_url, timeout=10) as reply:
        assert b"batchrun_serve_batches_running" in reply.read()
