"""load_job: a job file becomes a frozen Job, or a JobError listing every problem with its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrun.errors import JobError
from batchrun.job.spec import Job, load_job
from tests.support import JOBS, write_job

SUMMARISE = """
    kind = "chat"
    model = ["qwen3-32b-awq", "qwen3-coder-30b-a3b-instruct-fp8"]

    [endpoint]
    base_url = "local"

    [input]
    path = "data/news.jsonl"
    id = "id"

    [prompt]
    system = "/no_think Answer in Russian."
    user = "Summarise in two sentences:\\n\\n{title}\\n{text}"

    [params]
    temperature = 0.2
    max_tokens = 256

    [output]
    path = "out/summaries"
    keep = ["title"]

    [run]
    concurrency = 16
    max_attempts = 5

    [models."qwen3-coder-30b-a3b-instruct-fp8"]
    rps = 1.5
"""

EMBED = """
    kind = "embeddings"
    model = "bge-m3"

    [input]
    path = "news.jsonl"
    text = "text"

    [output]
    path = "out/vectors"
"""


def load_error(path: Path) -> str:
    with pytest.raises(JobError) as caught:
        load_job(path)
    return str(caught.value)


def chat_job(tmp_path: Path, extra: str = "", run: str = "", prompt: str = "{text}") -> Path:
    return write_job(
        tmp_path / "bad.toml",
        f"""
        kind = "chat"
        model = "qwen3-32b-awq"
        {extra}
        [input]
        path = "news.jsonl"
        [prompt]
        user = "{prompt}"
        [output]
        path = "out"
        [run]
        {run}
        """,
    )


@pytest.mark.parametrize("path", sorted(JOBS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_job_file_loads(path: Path) -> None:
    job = load_job(path)

    assert job.name == path.stem
    assert job.models
    assert all(rate > 0 for rate in job.rps.values())


def test_shipped_demo_summarise_job_reads_the_bundled_news() -> None:
    job = load_job(JOBS / "demo-summarise.toml")

    assert (job.kind, job.models, job.rps) == ("chat", ("qwen3-32b-awq",), {"qwen3-32b-awq": 2.0})
    assert job.spec.endpoint.is_local
    assert job.input_columns == ("id", "text", "title", "lang")


def test_shipped_style_chat_job_loads_into_a_typed_job(tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path / "summarise.toml", SUMMARISE))

    assert job.kind == "chat"
    assert job.models == ("qwen3-32b-awq", "qwen3-coder-30b-a3b-instruct-fp8")
    assert job.rps == {"qwen3-32b-awq": 2.0, "qwen3-coder-30b-a3b-instruct-fp8": 1.5}
    assert job.spec.run.concurrency == 16
    assert job.spec.params == {"temperature": 0.2, "max_tokens": 256}
    assert job.text_columns == ("title", "text")
    assert job.input_columns == ("id", "title", "text")


def test_job_name_defaults_to_the_file_stem_and_can_be_set(tmp_path: Path) -> None:
    assert load_job(write_job(tmp_path / "summarise.toml", SUMMARISE)).name == "summarise"
    named = write_job(tmp_path / "other.toml", 'name = "digest"\n' + EMBED)
    assert load_job(named).name == "digest"


def test_embeddings_job_with_a_single_model_gets_its_catalog_rate(tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path / "embed.toml", EMBED))

    assert job.kind == "embeddings"
    assert job.models == ("bge-m3",)
    assert job.rps == {"bge-m3": 7.0}
    assert job.text_columns == ("text",)


def test_job_repr_is_short_and_names_the_job(tmp_path: Path) -> None:
    text = repr(load_job(write_job(tmp_path / "summarise.toml", SUMMARISE)))

    assert text.startswith("Job('summarise'")
    assert "chat" in text
    assert len(text) < 120
    assert "Summarise in two sentences" not in text


def test_typo_in_run_key_suggests_the_right_key(tmp_path: Path) -> None:
    message = load_error(chat_job(tmp_path, run="concurency = 4"))

    assert "bad.toml: [run].concurency: unknown key; did you mean 'concurrency'?" in message


def test_typo_in_a_model_override_suggests_rps(tmp_path: Path) -> None:
    path = write_job(tmp_path / "embed.toml", EMBED + '\n[models."bge-m3"]\nrsp = 3\n')

    message = load_error(path)

    assert """embed.toml: [models."bge-m3"].rsp: unknown key; did you mean 'rps'?""" in message


def test_unknown_top_level_key_suggests_the_close_one(tmp_path: Path) -> None:
    message = load_error(chat_job(tmp_path, extra='nmae = "x"'))

    assert "bad.toml: nmae: unknown key; did you mean 'name'?" in message


def test_every_problem_is_reported_at_once_with_its_key(tmp_path: Path) -> None:
    path = write_job(
        tmp_path / "many.toml",
        """
        kind = "chat"
        model = "qwen3-32b-awq"
        [prompt]
        user = "{text}"
        [output]
        path = "out"
        [run]
        concurency = 4
        max_attempts = "many"
        timeout_s = -1
        """,
    )

    lines = load_error(path).splitlines()

    assert all(line.startswith(f"{path}: ") for line in lines)
    assert any("[input]: missing; this key is required" in line for line in lines)
    assert any("[run].concurency: unknown key" in line for line in lines)
    assert any("[run].max_attempts:" in line and "'many'" in line for line in lines)
    assert any("[run].timeout_s:" in line and "greater than 0" in line for line in lines)
    assert len(lines) == 4


def test_missing_required_key_in_a_section_names_its_path(tmp_path: Path) -> None:
    path = write_job(
        tmp_path / "nopath.toml",
        'kind = "embeddings"\nmodel = "bge-m3"\n[input]\nid = "id"\n[output]\npath = "o"\n',
    )

    assert "nopath.toml: [input].path: missing; this key is required" in load_error(path)


def test_wrong_type_names_the_key_and_the_value(tmp_path: Path) -> None:
    message = load_error(chat_job(tmp_path, run='batch_size = "lots"'))

    assert "bad.toml: [run].batch_size:" in message
    assert "valid integer" in message
    assert "'lots'" in message


def test_unknown_kind_is_rejected(tmp_path: Path) -> None:
    message = load_error(write_job(tmp_path / "k.toml", EMBED.replace("embeddings", "rerank")))

    assert "k.toml: kind:" in message
    assert "'rerank'" in message


def test_model_of_the_wrong_type_is_reported_under_its_own_key(tmp_path: Path) -> None:
    message = load_error(write_job(tmp_path / "m.toml", EMBED.replace('"bge-m3"', "3")))

    assert "m.toml: model:" in message
    assert "[model]." not in message


def test_bad_toml_is_a_job_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('kind = "chat\nmodel = 1\n', encoding="utf-8")

    message = load_error(path)

    assert message.startswith(f"{path}: not valid TOML")


def test_missing_job_file_is_a_job_error(tmp_path: Path) -> None:
    assert load_error(tmp_path / "nope.toml") == f"{tmp_path / 'nope.toml'}: no such job file"


def test_job_file_that_is_not_utf8_is_a_job_error(tmp_path: Path) -> None:
    path = tmp_path / "latin.toml"
    path.write_bytes(b'name = "caf\xe9"\n')

    assert load_error(path).startswith(f"{path}: cannot read")


@pytest.mark.parametrize("template", ["{text:3}", "{0}", "{}", "{text!r}"])
def test_template_placeholder_must_be_a_plain_column_name(tmp_path: Path, template: str) -> None:
    message = load_error(chat_job(tmp_path, prompt=f"Summarise {template}"))

    assert "bad.toml: [prompt].user: placeholder" in message
    assert "plain column name" in message


def test_literal_braces_in_a_template_are_allowed(tmp_path: Path) -> None:
    job = load_job(chat_job(tmp_path, prompt='Answer as {{\\"a\\": 1}} for {text}'))

    assert job.text_columns == ("text",)


def test_chat_job_without_prompt_says_how_to_add_one(tmp_path: Path) -> None:
    path = write_job(
        tmp_path / "noprompt.toml",
        'kind = "chat"\nmodel = "qwen3-32b-awq"\n[input]\npath = "x.jsonl"\n[output]\npath = "o"\n',
    )

    message = load_error(path)

    assert "noprompt.toml: [prompt]: a chat job needs [prompt]" in message


def test_embeddings_job_with_a_prompt_is_refused(tmp_path: Path) -> None:
    path = write_job(tmp_path / "e.toml", EMBED + '\n[prompt]\nuser = "{text}"\n')

    assert "e.toml: [prompt]: an embeddings job sends [input].text as is" in load_error(path)


def test_chat_model_under_embeddings_kind_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = write_job(tmp_path / "e.toml", EMBED.replace('"bge-m3"', '"qwen3-32b-awq"'))

    message = load_error(path)

    assert "e.toml: model: 'qwen3-32b-awq' is a chat model but kind = \"embeddings\"" in message
    assert 'use kind = "chat"' in message


def test_empty_model_list_is_refused(tmp_path: Path) -> None:
    path = write_job(tmp_path / "e.toml", EMBED.replace('"bge-m3"', "[]"))

    assert "e.toml: model: give at least one model name" in load_error(path)


def test_reserved_params_are_refused_each_on_its_line(tmp_path: Path) -> None:
    path = chat_job(tmp_path, extra='[params]\nmodel = "x"\nstream = true\ntemperature = 0')

    lines = load_error(path).splitlines()

    assert lines == [
        f"{path}: [params].model: set by batchrun itself; remove it from [params]",
        f"{path}: [params].stream: set by batchrun itself; remove it from [params]",
    ]


def test_schema_and_consistency_problems_are_reported_together(tmp_path: Path) -> None:
    path = write_job(
        tmp_path / "both.toml",
        'kind = "chat"\nmodel = "qwen3-32b-awq"\n[input]\npath = "x.jsonl"\n'
        '[output]\npath = "o"\n[run]\nconcurency = 4\n',
    )

    message = load_error(path)

    assert "[run].concurency: unknown key" in message
    assert "[prompt]: a chat job needs [prompt]" in message


def _fingerprint(tmp_path: Path, body: str) -> str:
    return load_job(write_job(tmp_path / "fp.toml", body)).fingerprint()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("Summarise in two sentences", "Summarise in one sentence"),
        ("/no_think Answer in Russian.", "Answer in Russian."),
        ("temperature = 0.2", "temperature = 0.7"),
        ('model = ["qwen3-32b-awq", ', 'model = ["qwen3-32b-awq-v2", '),
    ],
    ids=["user-prompt", "system-prompt", "params", "model"],
)
def test_fingerprint_changes_when_the_requests_change(tmp_path: Path, old: str, new: str) -> None:
    assert old in SUMMARISE
    before = _fingerprint(tmp_path, SUMMARISE)

    assert _fingerprint(tmp_path, SUMMARISE.replace(old, new)) != before


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("concurrency = 16", "concurrency = 2"),
        ("max_attempts = 5", "max_attempts = 9\n    stream = true"),
        ("rps = 1.5", "rps = 0.5"),
        ('path = "out/summaries"', 'path = "elsewhere"'),
    ],
    ids=["concurrency", "attempts-and-stream", "rps", "output-path"],
)
def test_fingerprint_ignores_how_the_job_runs(tmp_path: Path, old: str, new: str) -> None:
    assert old in SUMMARISE
    before = _fingerprint(tmp_path, SUMMARISE)

    assert _fingerprint(tmp_path, SUMMARISE.replace(old, new)) == before


def test_fingerprint_is_stable_across_loads(tmp_path: Path) -> None:
    first = load_job(write_job(tmp_path / "a.toml", SUMMARISE))
    second = load_job(write_job(tmp_path / "b.toml", SUMMARISE))

    assert isinstance(first, Job)
    assert first.fingerprint() == second.fingerprint()
    assert len(first.fingerprint()) == 16


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:6379/0", "not a Redis URL (http://127.0.0.1:6379/0)"),
        ("redis//127.0.0.1:6379", "not a Redis URL (redis//127.0.0.1:6379)"),
        ("redis://127.0.0.1:63x9/0", "its port is not a number from 0 to 65535"),
        ("redis://:hunter2@127.0.0.1:port/0", "(redis://***@127.0.0.1:port/0)"),
        ("redis//ops:hunter2@127.0.0.1/0", "not a Redis URL (redis//***@127.0.0.1/0)"),
    ],
)
def test_a_shared_limit_that_is_not_a_redis_url_is_refused_with_its_key(
    tmp_path: Path, url: str, problem: str
) -> None:
    message = load_error(chat_job(tmp_path, f'[limits]\nshared = "{url}"'))

    assert message.startswith(f"{tmp_path / 'bad.toml'}: [limits].shared: ")
    assert problem in message
    assert "write redis://HOST:PORT/DB" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://:pw@cache.example:6380", "unix:///run/r.sock"]
)
def test_redis_urls_that_redis_accepts_are_accepted(tmp_path: Path, url: str) -> None:
    from redis.asyncio import Redis

    Redis.from_url(url)  # (parses only: no connection is made)
    assert load_job(chat_job(tmp_path, f'[limits]\nshared = "{url}"')).spec.limits.shared == url


@pytest.mark.parametrize("userinfo", ["ops:s3cr3t-pw", "sk-s3cr3t-pw"])
def test_an_endpoint_url_with_credentials_is_refused_without_showing_them(
    tmp_path: Path, userinfo: str
) -> None:
    job = chat_job(tmp_path, f'[endpoint]\nbase_url = "http://{userinfo}@127.0.0.1:9/v1"')

    message = load_error(job)

    assert message == (
        f"{job}: [endpoint].base_url: http://***@127.0.0.1:9/v1 holds a user name or "
        "password; remove them: batchrun sends the token of [endpoint].api_key_env "
        "(SCIBOX_API_KEY) itself"
    )


def test_a_toml_date_in_params_is_named_not_a_traceback(tmp_path: Path) -> None:
    """``[params]`` go to the service as JSON: TOML's dates and times have no JSON form."""
    job = chat_job(tmp_path, run="[params]\nstop = 1979-05-27T07:32:00Z\nx = [{y = 07:32:00}]")

    message = load_error(job)

    assert "[params].stop: datetime.datetime(1979, 5, 27, 7, 32" in message
    assert "[params].x.0.y: datetime.time(7, 32) is not a JSON value" in message
    assert "write it as a string" in message
