"""Jobs people run: answers that must meet a JSON Schema (re-asked when they do not), typed
columns from them, conversations from a column, and answers cut at ``max_tokens``."""

from __future__ import annotations

import io
import re
import signal
from enum import StrEnum
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel

import batchrun as batchrun_api
from batchrun.bench.processes import Emulator
from batchrun.emulator import EmulatorConfig, running_emulator
from batchrun.errors import JobError, RetryableError
from batchrun.job.answerschema import AnswerSchema, InvalidAnswer
from batchrun.job.spec import load_job
from batchrun.output.layout import OutputLayout
from batchrun.report.overview import validate_lines
from batchrun.runner import RunOptions, run_job
from batchrun.service.answers import ChatAnswer
from batchrun.tasks import job_schema
from tests.support import THINKER, batchrun, finish, news_rows, write_jsonl
from tests.support.fakeservice import FakeService, run_fake
from tests.support.outputs import read_columns
from tests.support.waits import accepted_requests, wait_for_a_part

QUIET = RunOptions(progress=False)
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["summary", "topic", "places", "sentiment"],
    "additionalProperties": False,
    "properties": {
        "summary": {"type": "string"},
        "topic": {"enum": ["city", "sport", "weather"]},
        "places": {"type": "array", "items": {"type": "string"}},
        "sentiment": {"type": "integer", "minimum": -2, "maximum": 2},
    },
}
SCHEMA_TOML = """
[output.schema]
type = "object"
required = ["summary", "topic", "places", "sentiment"]
additionalProperties = false
[output.schema.properties.summary]
type = "string"
[output.schema.properties.topic]
enum = ["city", "sport", "weather"]
[output.schema.properties.places]
type = "array"
items = { type = "string" }
[output.schema.properties.sentiment]
type = "integer"
minimum = -2
maximum = 2
"""


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", "test-token")


def job_file(
    base_url: str,
    *,
    prompt: str = 'user = "Extract:\\n\\n{text}"',
    params: str = "",
    run: str = "",
    output: str = SCHEMA_TOML,
    data: str = "news.jsonl",
) -> Path:
    path = Path("job.toml")
    path.write_text(
        f'kind = "chat"\nmodel = "{THINKER}"\n'
        f'[endpoint]\nbase_url = "{base_url}"\n'
        f'[input]\npath = "{data}"\n'
        f'[prompt]\nsystem = "/no_think Answer in JSON."\n{prompt}\n'
        f"[params]\n{params}\n"
        f"[run]\nbackoff_base_s = 0.05\nconcurrency = 8\n{run}\n"
        f'[models."{THINKER}"]\nrps = 150\n'
        f'[output]\npath = "out"\n{output}',
        encoding="utf-8",
    )
    return path


async def test_invalid_answers_are_reasked_and_never_land_in_a_typed_column() -> None:
    write_jsonl(Path("news.jsonl"), news_rows(60))
    async with running_emulator(EmulatorConfig(rps_scale=100, invalid_json_rate=0.3)) as url:
        out = io.StringIO()
        outcome = await run_job(load_job(job_file(url, run="max_reasks = 2")), QUIET, out)
        sent = await accepted_requests(url, THINKER)

    rows = read_columns(Path("out"), ["id", "status", "error", "content", *SCHEMA["properties"]])
    assert rows.schema.field("sentiment").type == pa.int64()
    assert rows.schema.field("places").type == pa.list_(pa.string())
    ok = [row for row in rows.to_pylist() if row["status"] == "ok"]
    failed = [row for row in rows.to_pylist() if row["status"] == "failed"]
    assert len(ok) + len(failed) == 60 and ok
    for row in ok:
        typed = {name: row[name] for name in SCHEMA["properties"]}
        jsonschema.validate(typed, SCHEMA)
        assert orjson.loads(row["content"]) == typed
    for row in failed:
        assert "after 2 re-asks" in row["error"] and "[output].schema" in row["error"]
        assert all(row[name] is None for name in SCHEMA["properties"])
    summary = orjson.loads(OutputLayout(Path("out")).summary().read_bytes())
    reasks = summary["models"][THINKER]["reasks"]
    assert reasks > 0 and f"{reasks} re-asks" in out.getvalue()
    assert sent == 60 + reasks  # each re-ask is a request of its own
    assert outcome.failed_rows == len(failed)


def conversation(number: int, system: str | None = None) -> list[dict[str, str]]:
    turns = [{"role": "system", "content": system}] if system else []
    turns.append({"role": "user", "content": "Hello."})
    turns.append({"role": "assistant", "content": "Hello! What shall I summarise?"})
    turns.append({"role": "user", "content": f"Summarise:\n\nStory {number} begins. It ends well."})
    return turns


@pytest.mark.parametrize("storage", ["jsonl", "parquet structs", "parquet json text"])
async def test_conversations_come_from_a_column(storage: str) -> None:
    rows = [{"id": "a", "chat": conversation(1)}, {"id": "b", "chat": conversation(2, "Think.")}]
    if storage == "jsonl":
        data = "news.jsonl"
        write_jsonl(Path(data), rows)
    else:
        data = "chats.parquet"
        text = storage.endswith("json text")
        cells = [orjson.dumps(row["chat"]).decode() if text else row["chat"] for row in rows]
        pq.write_table(pa.table({"id": ["a", "b"], "chat": cells}), data)
    async with running_emulator(EmulatorConfig(rps_scale=100)) as url:
        job = load_job(job_file(url, prompt='messages = "chat"', output="", data=data))
        assert (await run_job(job, QUIET, io.StringIO())).ok

    table = read_columns(Path("out"), ["id", "content", "reasoning"]).sort_by("id").to_pylist()
    assert [row["content"] for row in table] == [
        "Story 1 begins. It ends well.",
        "Story 2 begins. It ends well.",
    ]
    # the job's "/no_think" system message is put before a conversation without one only
    assert table[0]["reasoning"] is None and table[1]["reasoning"]


async def test_a_malformed_conversation_is_reported_with_its_line_and_never_sent() -> None:
    write_jsonl(
        Path("news.jsonl"),
        [
            {"id": "good", "chat": conversation(1)},
            {"id": "text", "chat": "hello there"},
            {"id": "role", "chat": [{"role": "robot", "content": "beep"}]},
            {"id": "empty", "chat": [{"role": "user"}]},
        ],
    )
    async with running_emulator(EmulatorConfig(rps_scale=100)) as url:
        job = load_job(job_file(url, prompt='messages = "chat"', output=""))
        lines, fit = validate_lines(job)
        outcome = await run_job(job, QUIET, io.StringIO())
        sent = await accepted_requests(url, THINKER)

    report = "\n".join(lines)
    assert not fit and "3 rows cannot be sent" in report
    assert "news.jsonl:2 (column 'chat' is text but not a JSON list of messages)" in report
    assert "news.jsonl:3 (column 'chat' message 1 has role 'robot'" in report
    assert "news.jsonl:4 (column 'chat' message 1 (user) has no content)" in report
    assert sent == 1 and outcome.failed_rows == 3


@pytest.mark.parametrize(
    ("schema", "run", "status"),
    [
        ("", "", "failed"),
        ("", "accept_cut = true", "ok"),
        (SCHEMA_TOML, "accept_cut = true", "failed"),
    ],
)
async def test_an_answer_cut_at_max_tokens_fails_unless_accepted(
    schema: str, run: str, status: str
) -> None:
    write_jsonl(Path("news.jsonl"), news_rows(3))
    async with running_emulator(EmulatorConfig(rps_scale=100)) as url:
        job = load_job(job_file(url, params="max_tokens = 3", run=run, output=schema))
        await run_job(job, QUIET, io.StringIO())

    rows = read_columns(Path("out"), ["status", "error", "finish_reason"]).to_pylist()
    assert {row["status"] for row in rows} == {status}
    if status == "failed":
        assert {row["error"] for row in rows} == {
            "answer cut at max_tokens = 3: raise [params].max_tokens"
        }
    else:
        assert {row["finish_reason"] for row in rows} == {"length"}


@pytest.mark.serial
def test_a_structured_job_resumes_exactly_once_after_a_kill(emulator_dir: Path) -> None:
    write_jsonl(Path("news.jsonl"), news_rows(120))
    options = ("--invalid-json-rate", "0.3")
    with Emulator(emulator_dir, rps_scale=10, options=options) as emulator:
        job = job_file(emulator.base_url, output="part_rows = 5\n" + SCHEMA_TOML)
        job.write_text(job.read_text().replace("rps = 150", "rps = 20"))
        process = batchrun("run", str(job), "--no-progress")
        wait_for_a_part(Path("out"))
        process.send_signal(signal.SIGKILL)
        process.communicate()
        before = read_columns(Path("out"), ["id"]).num_rows
        code, out, err = finish(batchrun("run", str(job), "--no-progress"))

    assert 0 < before < 120, "the kill came too early or too late to test a resume"
    assert code in (0, 1), err
    rows = read_columns(Path("out"), ["id", "status", "sentiment"]).to_pylist()
    assert sorted(row["id"] for row in rows) == [f"n{i:05d}" for i in range(120)]
    assert all(isinstance(row["sentiment"], int) for row in rows if row["status"] == "ok")
    unchanged = int(re.search(r"(\d+) unchanged", out).group(1))  # type: ignore[union-attr]
    assert unchanged >= before  # what the killed run wrote is not sent again


def test_a_property_named_like_a_column_batchrun_writes_is_a_job_file_error() -> None:
    write_jsonl(Path("news.jsonl"), news_rows(1))
    clash = SCHEMA_TOML + '[output.schema.properties.content]\ntype = "string"\n'
    job = load_job(job_file("local", output=clash))

    with pytest.raises(JobError, match=r"\[output\].schema: the properties content would take"):
        job_schema(job, {})


@pytest.mark.parametrize(
    ("prompt", "params", "output", "message"),
    [
        ('user = "{text}"\nmessages = "chat"', "", "", "give user"),
        (
            'user = "{text}"',
            'response_format = { type = "json_object" }',
            SCHEMA_TOML,
            "[params].response_format: set by batchrun itself",
        ),
        ('user = "{text}"', "", 'schema = "missing.json"', "cannot read the schema file"),
        ('user = "{text}"', "", '[output.schema]\ntype = "string"\n', "give an object schema"),
        ('user = "{text}"', "", "[output.schema]\ntype = 3\n", "not a valid JSON Schema"),
    ],
)
def test_job_file_mistakes_about_schemas_and_conversations_are_explained(
    prompt: str, params: str, output: str, message: str
) -> None:
    with pytest.raises(JobError) as raised:
        load_job(job_file("local", prompt=prompt, params=params, output=output))
    assert message in str(raised.value)


def test_column_types_follow_the_schema_and_imprecise_parts_are_json_text() -> None:
    schema = AnswerSchema.load(
        {
            "type": "object",
            "properties": {
                "n": {"type": ["integer", "null"]},
                "x": {"type": "number"},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}},
                "point": {
                    "type": "object",
                    "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                    "additionalProperties": False,
                },
                "loose": {"type": "object"},
                "mixed": {"type": "array", "items": {"type": ["string", "integer"]}},
            },
        }
    )
    types = {field.name: field.type for field in schema.fields()}
    assert types == {
        "n": pa.int64(),
        "x": pa.float64(),
        "tags": pa.list_(pa.string()),
        "point": pa.struct([("lat", pa.float64()), ("lon", pa.float64())]),
        "loose": pa.string(),
        "mixed": pa.string(),
    }
    answer = schema.parse(
        '```json\n{"n": 2.0, "x": 1, "loose": {"k": [1]}, "mixed": [1, "a"]}\n```'
    )
    assert schema.values(answer) == {
        "n": 2,
        "x": 1.0,
        "tags": None,
        "point": None,
        "loose": '{"k":[1]}',
        "mixed": '[1,"a"]',
    }


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("Sure! Here it is: {", "the answer is not JSON"),
        ('{"summary": "s", "topic": "moon", "places": [], "sentiment": 0}', "at $.topic"),
        ('{"summary": "s", "topic": "city", "places": []}', "'sentiment' is a required property"),
        ('{"summary": "s", "topic": "city", "places": [], "sentiment": 9}', "9 is greater than"),
    ],
)
def test_an_invalid_answer_says_what_is_wrong(content: str, reason: str) -> None:
    with pytest.raises(InvalidAnswer, match=re.escape(reason)):
        AnswerSchema.load(SCHEMA).parse(content)


def test_an_integer_beyond_64_bits_is_an_invalid_answer_not_a_crash() -> None:
    integers = {"type": "array", "items": {"type": "integer"}}
    schema = AnswerSchema.load(
        {"type": "object", "properties": {"n": {"type": "integer"}, "l": integers}}
    )
    for answer in ('{"n": 9223372036854775808}', '{"n": 1e20}', '{"l": [1e19]}'):
        with pytest.raises(InvalidAnswer, match="beyond a 64-bit integer"):
            schema.values(schema.parse(answer))


def test_a_property_that_may_take_several_shapes_is_json_text() -> None:
    schema = AnswerSchema.load(
        {
            "type": "object",
            "$defs": {"place": {"type": "string"}},
            "properties": {
                "pair": {
                    "type": "array",
                    "prefixItems": [{"type": "string"}],
                    "items": {"type": "integer"},
                },
                "place": {"$ref": "#/$defs/place"},
            },
        }
    )
    assert [field.type for field in schema.fields()] == [pa.string(), pa.string()]
    assert schema.values(schema.parse('{"pair": ["a", 1], "place": "Tver"}')) == {
        "pair": '["a",1]',
        "place": "Tver",
    }
    refused = (("http://x/s.json", "only references inside"), ("#/$defs/no", "points at nothing"))
    for reference, reason in refused:
        with pytest.raises(ValueError, match=reason):
            AnswerSchema.load({"type": "object", "properties": {"p": {"$ref": reference}}})


async def test_reasks_do_not_use_up_the_attempts_for_failures() -> None:
    write_jsonl(Path("news.jsonl"), news_rows(1))
    job = load_job(job_file("local", run="max_attempts = 2\nmax_reasks = 2"))
    good = orjson.dumps({"summary": "s", "topic": "city", "places": [], "sentiment": 1}).decode()
    answers: list[Any] = ["not json", '{"summary": "s"}', RetryableError("503", 503), good]

    def script(model: str, body: dict[str, Any], call: int) -> Any:
        answer = answers[call - 1]
        return answer if isinstance(answer, Exception) else ChatAnswer(answer, None, "stop", 5, 3)

    table = await run_fake(job, FakeService(script))

    (row,) = table.to_pylist()
    assert row["status"] == "ok" and row["sentiment"] == 1 and row["attempts"] == 4


class Place(BaseModel):
    name: str
    country: str


class Tone(StrEnum):
    CALM = "calm"
    TENSE = "tense"


class Extract(BaseModel):
    """What a user writes in Python: nested models become ``$defs`` and ``$ref``s."""

    summary: str
    place: Place
    visited: list[Place]
    tone: Tone


def test_a_pydantic_models_nested_models_are_typed_columns_and_answered() -> None:
    write_jsonl(Path("news.jsonl"), news_rows(4))
    job = batchrun_api.Job.from_dict(
        {
            "kind": "chat",
            "model": THINKER,
            "input": {"path": "news.jsonl"},
            "prompt": {"system": "/no_think Extract.", "user": "{text}"},
            "output": {"path": "out", "schema": Extract.model_json_schema()},
            "models": {THINKER: {"rps": 50}},
        }
    )
    place = pa.struct([("name", pa.string()), ("country", pa.string())])

    assert batchrun_api.run(job, progress=False).ok

    table = pq.read_table("out")
    types = {name: table.schema.field(name).type for name in Extract.model_fields}
    assert types == {
        "summary": pa.string(),
        "place": place,
        "visited": pa.list_(place),
        "tone": pa.string(),
    }
    for row in table.to_pylist():
        parsed = Extract.model_validate_json(row["content"])  # the emulator followed the $refs
        assert row["place"] == parsed.place.model_dump() and row["place"]["name"]
        assert row["visited"] == [p.model_dump() for p in parsed.visited]
        assert row["tone"] == parsed.tone.value


def test_columns_typed_anew_for_a_schema_change_the_fingerprint() -> None:
    closed = {"type": "object", "properties": {"p": {"type": "string"}}}
    nested = Extract.model_json_schema()
    assert not AnswerSchema.load(closed).typed_anew  # unchanged columns, unchanged outputs
    assert AnswerSchema.load(nested).typed_anew  # an older output of it is refused, not mixed
