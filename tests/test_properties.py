"""Property-based tests of the ``batchrun`` command: random job files and random input lines
fed to ``validate`` and ``run`` end in exit 0, 1 or 2 with a message, never a traceback.

``run`` talks to one emulator process (``--rps-scale 1000``) started for the module. Exit 3
is allowed for ``run`` only when the failure is the service's: the job names a model the
emulator does not serve (404, "does not serve") or the endpoint cannot be reached ("cannot
reach"); every other 3 is a failure.

The random strategies leave out the inputs of the bugs pinned at the end of this file (each an
``xfail(strict=True)`` with its minimal example), so that the broad properties keep guarding
everything else; once a bug is fixed, its test XPASSes and its value goes back into the mix.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, TypeVar

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from batchrun.bench.processes import Emulator
from batchrun.cli import main
from batchrun.output.layout import OutputLayout, read_json
from tests.support.outputs import read_columns

T = TypeVar("T")
KEY = "tok-test-properties-7731"
CHAT, CODER, EMBED, UNKNOWN = (
    "qwen3-32b-awq",
    "qwen3-coder-30b-a3b-instruct-fp8",
    "bge-m3",
    "no-such-model",
)
UNREACHABLE = "http://127.0.0.1:9/v1"
SERVICE_FAILURES = ("does not serve", "cannot reach", "404 from")

FAST = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PINNED = settings(FAST, max_examples=5)


@pytest.fixture(scope="module")
def emulator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with Emulator(tmp_path_factory.mktemp("emulator"), rps_scale=1000) as emulator:
        yield emulator.base_url


class Outcome(NamedTuple):
    code: int
    out: str
    err: str


def call(*argv: str) -> Outcome:
    """``batchrun ARGV`` in this process; anything escaping ``main`` fails the test."""
    out, err = io.StringIO(), io.StringIO()
    escaped = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except (Exception, SystemExit) as exc:
            escaped = "".join(traceback.format_exception(exc))
    if escaped is not None:
        pytest.fail(f"main({list(argv)}) raised:\n{escaped}\nstderr:\n{err.getvalue()}")
    return Outcome(code, out.getvalue(), err.getvalue())


def assert_clean(outcome: Outcome, *, service_may_fail: bool = False) -> None:
    """Exit 0/1/2 (3 only for the service's failure) with a message, no traceback, no key."""
    code, out, err = outcome
    shown = f"exit {code}\n--- stdout:\n{out}\n--- stderr:\n{err}"
    assert "Traceback" not in out + err, shown
    assert KEY not in out + err, shown
    allowed = {0, 1, 2}
    if service_may_fail and err.startswith("fatal:") and any(s in err for s in SERVICE_FAILURES):
        allowed.add(3)
    assert code in allowed, shown
    event(f"exit {code}")
    if code != 0:
        assert (out + err).strip(), shown


def assert_refused(outcome: Outcome, wanted: str) -> None:
    """``assert_clean``, and exit 2 with a message that says what to fix: ``wanted`` in it."""
    assert_clean(outcome)
    code, _, err = outcome
    assert code == 2 and wanted in err, f"exit {code}\n--- stderr:\n{err}"


@contextlib.contextmanager
def fresh_directory(tmp_path: Path) -> Iterator[Path]:
    """A new directory per example (hypothesis reuses ``tmp_path``), the cwd while inside."""
    directory = Path(tempfile.mkdtemp(dir=tmp_path))
    with contextlib.chdir(directory):
        yield directory


# ---------------------------------------------------------------- random job files


def toml_str(text: str) -> str:
    """A TOML basic string holding ``text`` exactly."""
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def one(*literals: T) -> st.SearchStrategy[T]:
    return st.sampled_from(literals)


# No integer beyond 64 bits: as a [params] value it crashes run, see
# test_params_with_a_huge_integer_exit_2.
BAD_URLS = one(f'"{UNREACHABLE}"', '"@URL@/nope"', '"not a url"', '"ftp://127.0.0.1/v1"')
JUNK = st.one_of(
    one("3", "-1", "0", "2.5", "true", '"junk"', '""', "[]", '[1, "a"]', "{ a = 1 }"),
    one("1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", "nan", "-inf", "9" * 18),
    st.text(max_size=12).map(toml_str),
)
TEMPLATES_OK = one(
    '"Summarise: {text}"', '"{title}: {text}"', '"{{literal}} {text}"', '"{id} says {text}"'
)
TEMPLATES_BAD = st.one_of(
    one('"{nope}"', '"{0}"', '"{text!r}"', '"{"', '"}"', '"{text:>5}"', '"{a.b}"', '"{text[0]}"'),
    one('"{}"', '""', '"{text} {"', '"{{text}"', "'''{text}\n{title}'''"),
    st.text(alphabet="{}!:text0 ", max_size=10).map(toml_str),
)
PARAMS_OK = {
    "temperature": one("0.3", "0"),
    "max_tokens": one("60", "1"),
    "top_p": one("0.9"),
    "seed": one("7"),
    "stop": one('["\\n\\n"]'),
}
PARAMS_ODD = {  # reserved keys (exit 2) and values the service rejects (rows fail, exit 1)
    "stream": one("true"),
    "model": one(f'"{CHAT}"'),
    "messages": one("[]"),
    "input": one('"x"'),
    "max_tokens": one("-1", '"many"', "0"),
    "temperature": one('"hot"', "nan"),
    "nested": one("{ a = 1, b = [1, 2] }"),
    "when": one("1979-05-27", "07:32:00", "1979-05-27T07:32:00Z"),
    "encoding_format": one('"base64"', '"rot13"'),
    "dimensions": one("3", "1024"),
    # Integers beyond 64 bits are left out: see test_params_with_a_huge_integer_exit_2.
}
TWISTS = st.one_of(
    st.tuples(st.just("endpoint"), st.just("base_url"), BAD_URLS),
    st.tuples(st.just(""), st.just("model"), one(f'"{UNKNOWN}"', f'["{CHAT}", "{UNKNOWN}"]')),
    st.tuples(st.just("params"), one("max_tokens", "encoding_format", "dimensions"), one("-1")),
    st.tuples(st.just("params"), st.just("encoding_format"), one('"rot13"', "3")),
)
UNKNOWN_KEYS = one("concurency", "pth", "modle", "temprature", "extra", "id_column", "x")
GARBAGE = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    one("[input", "kind = ", '"a" = [', "[[run]]\n[run]", "\ufeffkind = 'chat'").map(str.encode),
)


class Knobs:
    """How one random job is drawn: all keys valid ("valid") or a mix ("mixed")."""

    def __init__(self, draw: st.DrawFn, for_run: bool, mixed: bool) -> None:
        self.draw, self.for_run, self.mixed = draw, for_run, mixed

    def value(self, good: st.SearchStrategy[str], bad: st.SearchStrategy[str] = JUNK) -> str:
        if self.mixed and self.draw(st.integers(0, 7)) == 7:
            return self.draw(bad)
        return self.draw(good)

    def keys(
        self, table: dict[str, tuple[bool, st.SearchStrategy[str], st.SearchStrategy[str]]]
    ) -> dict[str, str]:
        """The keys of one table: required ones always (unless mixed drops them), optional ones
        sometimes, plus unknown keys when mixed."""
        body = {}
        for key, (required, good, bad) in table.items():
            drop = self.draw(st.integers(0, 9)) == 9 if self.mixed and required else False
            if drop or not (required or self.draw(st.booleans())):
                continue
            body[key] = self.value(good, bad)
        if self.mixed and self.draw(st.integers(0, 5)) == 5:
            body[self.draw(UNKNOWN_KEYS)] = self.draw(JUNK)
        return body


def job_tables(knobs: Knobs) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Top-level keys and tables of one job, as TOML literals."""
    draw = knobs.draw
    kind = draw(one("chat", "embeddings"))
    models = [CHAT, CODER] if kind == "chat" else [EMBED]
    pool = [f'["{CHAT}", "{CODER}"]'] if kind == "chat" else []
    model = one(*(toml_str(m) for m in models), *pool)
    wrong_model = one(*(toml_str(m) for m in (CHAT, CODER, EMBED, UNKNOWN)), "[]", "[1]", "3")
    top = knobs.keys(
        {
            "name": (False, one('"prop"', '"a b"'), JUNK),
            "kind": (True, one(toml_str(kind)), one('"junk"', '"Chat"', "3", '["chat"]')),
            "model": (True, model, wrong_model),
        }
    )
    base_urls = ['"@URL@"'] if knobs.for_run else ['"@URL@"', '"local"']
    tables = {
        "endpoint": knobs.keys(
            {
                "base_url": (True, one(*base_urls), BAD_URLS | one("5")),
                "api_key_env": (False, one('"SCIBOX_API_KEY"'), one('"BATCHRUN_UNSET_VAR"', "3")),
            }
        ),
        "input": knobs.keys(
            {
                "path": (
                    True,
                    one('"news.jsonl"', '"@DIR@/news.jsonl"', '"n*.jsonl"', '"pq/ok.parquet"')
                    | one('"."', '"@DIR@"', '"**/*.jsonl"'),
                    one('"missing.jsonl"', '"job.toml"', '"broken"', '"broken/bad.parquet"')
                    | one('"empty.jsonl"', '"notes.txt"', '"["', '"*.nomatch"', '"pq"', "3"),
                ),
                "id": (False, one('"id"'), one('"nope"', '"title"', '"text"', "3")),
                "text": (False, one('"text"', '"title"'), one('"nope"', '"id"', "[]")),
            }
        ),
        "output": knobs.keys(
            {
                # Not an existing file, nor a NUL: see test_an_output_path_*.
                "path": (
                    True,
                    one('"out"', '"sub/out"', '"@DIR@/out"'),
                    one('""', '"."', '"pq"', "3"),
                ),
                "keep": (
                    False,
                    one("[]", '["title"]'),
                    one('["nope"]', '["status"]', '["id"]', '"title"'),
                ),
                "part_rows": (False, one("2", "100"), one("0", '"x"')),
            }
        ),
        "run": knobs.keys(
            {
                "concurrency": (
                    False,
                    one("1", "4", '"auto"'),
                    one("0", "-1", '"many"', "2.5", "true", '"auto "'),
                ),
                "stream": (False, one("true", "false"), one('"yes"', "1")),
                "max_attempts": (False, one("2"), one("0", "101")),
                "timeout_s": (False, one("30"), one("0", "-1", '"x"')),
                "batch_size": (False, one("2", "64"), one("0", "5000")),
                "batch_tokens": (False, one("100"), one("0")),
                "max_in_flight": (False, one("16"), one("0", "5000")),
                "grace_s": (False, one("1"), one("-1")),
                "backoff_base_s": (False, one("0.01"), one("-1")),
                "server_error_wait_s": (False, one("0.01"), one('"soon"')),
                "fallback_model": (
                    False,
                    one(toml_str(models[-1])),
                    one(f'"{UNKNOWN}"', f'"{EMBED if kind == "chat" else CHAT}"', "3"),
                ),
                "fallback_after": (False, one("2"), one("0")),
            }
        ),
    }
    if kind == "chat" or (knobs.mixed and draw(st.integers(0, 3)) == 3):
        tables["prompt"] = knobs.keys(
            {
                "system": (False, one('"/no_think Be brief."'), TEMPLATES_BAD),
                "user": (True, TEMPLATES_OK, TEMPLATES_BAD),
            }
        )
    tables["params"] = {
        key: knobs.value(good, PARAMS_ODD.get(key, JUNK))
        for key, good in PARAMS_OK.items()
        if draw(st.booleans())
    }
    if knobs.mixed and draw(st.integers(0, 3)) == 3:
        tables["params"] |= draw(st.dictionaries(st.sampled_from(sorted(PARAMS_ODD)), JUNK))
    # Every served model is paced at the emulator's (scaled) limit, so runs take no time. Rates
    # that overflow the plan's arithmetic are left out: see test_tiny_rps_*.
    rates = one("2000") if knobs.for_run else one("2000", "2", "0.5")
    for name in (CHAT, CODER, EMBED):
        tables[f'models."{name}"'] = {"rps": knobs.value(rates, one("0", "-1", '"fast"', "nan"))}
    if knobs.mixed and draw(st.booleans()):
        tables[f'models."{UNKNOWN}"'] = knobs.keys({"rps": (True, rates, JUNK)})
    return top, tables


def render(top: dict[str, str], tables: dict[str, dict[str, str]], scalars: set[str]) -> str:
    """TOML text; a table named in ``scalars`` is written as a plain top-level value instead."""
    lines = [f"{key} = {value}" for key, value in top.items()]
    lines += [f"{name} = {toml_str(name)}" for name in sorted(scalars)]
    for name, body in tables.items():
        if name in scalars:
            continue
        lines.append(f"[{name}]")
        lines += [f"{key} = {value}" for key, value in body.items()]
    return "\n".join(lines) + "\n"


@st.composite
def job_files(draw: st.DrawFn, for_run: bool) -> tuple[bytes, str]:
    """(the job file's bytes, the path given on the command line)."""
    shape = draw(one("valid", "valid", "twisted", "mixed", "mixed", "broken"))
    knobs = Knobs(draw, for_run, mixed=shape in ("mixed", "broken"))
    top, tables = job_tables(knobs)
    if shape == "twisted":  # a valid file the service refuses: rows fail (1) or all fails (3)
        section, key, value = draw(TWISTS)
        (top if section == "" else tables.setdefault(section, {}))[key] = value
    scalars: set[str] = set()
    if knobs.mixed and draw(st.integers(0, 3)) == 3:
        dropped = draw(st.sets(one(*tables), min_size=1, max_size=2))
        scalars = draw(st.sets(one(*(set(tables) - dropped)), max_size=1))
        tables = {name: body for name, body in tables.items() if name not in dropped}
    data = render(top, tables, scalars).encode()
    if shape == "broken":  # garbage, a torn file, or a file that is not UTF-8
        cut = draw(st.integers(0, len(data)))
        torn, latin = data[:cut], data[:cut] + b"\xff\xfe" + data[cut:]
        data = draw(st.one_of(GARBAGE, st.just(torn), st.just(latin)))
    target = draw(one(*["job.toml"] * 12, "missing.toml", ".", "pq/ok.parquet"))
    return data, target


def write_inputs(directory: Path) -> None:
    """The files a random job may point at: good, empty, damaged and unrelated."""
    rows = [{"id": f"n{i}", "title": f"Title {i}", "text": f"Item {i} happened."} for i in range(5)]
    (directory / "news.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    (directory / "empty.jsonl").write_bytes(b"")
    (directory / "notes.txt").write_text("not an input\n")
    (directory / "pq").mkdir()
    table = pa.table({"id": [0, 1, 2], "title": ["a", "b", "c"], "text": ["One.", "Two.", "3."]})
    pq.write_table(table, directory / "pq" / "ok.parquet")
    (directory / "broken").mkdir()
    (directory / "broken" / "bad.parquet").write_bytes(b"PAR1 not really parquet")


def place_job(directory: Path, data: bytes, url: str) -> None:
    data = data.replace(b"@DIR@", str(directory).encode()).replace(b"@URL@", url.encode())
    (directory / "job.toml").write_bytes(data)


@FAST
@given(case=job_files(for_run=False))
@example(case=(b'kind = "chat"\nmodel = "qwen3-32b-awq"\n', "job.toml"))
@example(case=(b"\xff\xfe\x00garbage", "job.toml"))
def test_validate_any_job_file_exits_0_1_2_with_a_message(
    tmp_path: Path, case: tuple[bytes, str]
) -> None:
    data, target = case
    with fresh_directory(tmp_path) as directory:
        write_inputs(directory)
        place_job(directory, data, UNREACHABLE)
        assert_clean(call("validate", target))


@FAST
@given(case=job_files(for_run=True))
@example(
    case=(
        b'kind = "chat"\nmodel = "no-such-model"\n[endpoint]\nbase_url = "@URL@"\n'
        b'[input]\npath = "news.jsonl"\n[prompt]\nuser = "{text}"\n[output]\npath = "out"\n',
        "job.toml",
    )
)
def test_run_any_job_file_exits_0_1_2_or_3_for_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator_url: str, case: tuple[bytes, str]
) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", KEY)
    data, target = case
    with fresh_directory(tmp_path) as directory:
        write_inputs(directory)
        place_job(directory, data, emulator_url)
        assert_clean(call("run", target, "--limit", "3"), service_may_fail=True)


# ---------------------------------------------------------------- random input lines

GOOD_IDS = st.one_of(
    st.text(min_size=1, max_size=8), st.integers(-(2**63), 2**64 - 1), one("1", "01", "-0")
)
BAD_IDS = one("null", '""', "1.5", "1e3", "true", "false", "[]", "{}", "[1]", str(2**64), "-0.0")
TEXTS = st.text(max_size=40).filter(str.strip)
BAD_TEXTS = st.one_of(one("null", '""', '"   "', "3", '["x"]', '{"a": 1}'), st.text(max_size=3))


def json_line(id_: bytes, text: bytes | None, title: bytes = b'"t"', extra: bytes = b"") -> bytes:
    fields = [b'"id": ' + id_, b'"title": ' + title]
    if text is not None:
        fields.append(b'"text": ' + text)
    return b"{" + b", ".join(fields) + extra + b"}"


def dumps(value: object) -> bytes:
    return orjson.dumps(value)


good_lines = st.builds(json_line, GOOD_IDS.map(dumps), TEXTS.map(dumps))
odd_lines = st.builds(
    json_line,
    st.one_of(GOOD_IDS.map(dumps), BAD_IDS.map(str.encode)),
    st.one_of(st.none(), TEXTS.map(dumps), BAD_TEXTS.map(lambda t: t.encode())),
    one(b'"t"', b"null", b"7", b'{"x": [1]}'),
    one(b"", b', "more": 1', b', "text2": null'),
)
# A line that repeats the id key is left out: see test_a_repeated_id_key_is_a_duplicate_id.
other_lines = st.one_of(
    one(b"[1, 2]", b"42", b'"s"', b"null", b"true", b"{}", b"{", b'{"id": "x",}', b"nope"),
    one(b"", b"   ", b"\t", b"\r", b"\xef\xbb\xbf{}", b'{"id": "a"} {"id": "b"}'),
    one(
        b'{"id": "\\ud800", "title": "t", "text": "x"}',
        b'{"id": "k", "title": "t", "text": "\\udc00"}',
    ),
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
)
textless_lines = st.builds(json_line, GOOD_IDS.map(dumps), BAD_TEXTS.map(str.encode))
clean_files = st.lists(
    st.one_of(good_lines, good_lines, textless_lines, one(b"", b"  ")),
    max_size=12,
    unique_by=lambda line: line.split(b",")[0],
)
messy_files = st.lists(st.one_of(good_lines, odd_lines, other_lines), max_size=12)

CHAT_JOB = """\
kind = "chat"
model = "qwen3-32b-awq"
[endpoint]
base_url = "{url}"
[input]
path = "news.jsonl"
[prompt]
system = "/no_think Be brief."
user = "Summarise: {{text}}"
[output]
path = "out"
keep = ["title"]
[models."qwen3-32b-awq"]
rps = 2000
"""


def input_ids(data: bytes) -> list[str]:
    """The ids of a JSONL input that ``run`` accepted: every non-blank line is an object."""
    ids = []
    for line in data.split(b"\n"):
        if line.strip():
            value = orjson.loads(line)["id"]
            ids.append(value if isinstance(value, str) else str(value))
    return ids


@FAST
@given(
    lines=st.one_of(clean_files, messy_files),
    newline=one(b"\n", b"\r\n"),
    last=one(b"", b"\n"),
)
@example(
    lines=[b'{"id": 1, "title": "t", "text": "a"}', b'{"id": "1", "title": "t", "text": "b"}'],
    newline=b"\n",
    last=b"\n",
)
@example(
    lines=[b'{"id": 18446744073709551616, "title": "t", "text": "a"}'], newline=b"\n", last=b""
)
@example(lines=[b"\xff\xfe"], newline=b"\n", last=b"")
@example(lines=[], newline=b"\n", last=b"")
def test_any_input_lines_exit_0_1_2_and_run_writes_each_id_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    emulator_url: str,
    lines: list[bytes],
    newline: bytes,
    last: bytes,
) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", KEY)
    data = newline.join(lines) + (last if lines else b"")
    with fresh_directory(tmp_path) as directory:
        (directory / "news.jsonl").write_bytes(data)
        (directory / "job.toml").write_text(CHAT_JOB.format(url=emulator_url))
        validated = call("validate", "job.toml")
        assert_clean(validated)
        ran = call("run", "job.toml")
        assert_clean(ran)
        # validate passes an input without rows ("0 rows") that run refuses ("holds no rows"):
        # a known difference, left out of the cross-checks.
        if ran.code == 2 and ", 0 rows," not in validated.out:
            assert validated.code == 2, "run refused an input that validate passed"
        if validated.code == 0 and ", 0 rows," not in validated.out:
            assert ran.code == 0, f"validate passed but run exited {ran.code}:\n{ran.err}"
            assert f", {len(input_ids(data))} rows," in validated.out
        if ran.code in (0, 1):
            ids = input_ids(data)
            assert len(ids) == len(set(ids)), "run accepted duplicate ids"
            output = read_columns(Path("out"), ["id", "status"])
            written = output.column("id").to_pylist()
            assert sorted(written) == sorted(ids), "the output must hold each input id once"
            failed = output.column("status").to_pylist().count("failed")
            assert (failed > 0) == (ran.code == 1)


# ---------------------------------------------------------------- bugs found, pinned

MINIMAL_JOB = """\
kind = "chat"
model = "qwen3-32b-awq"
[endpoint]
base_url = "{url}"
[input]
path = "news.jsonl"
[prompt]
user = "{{text}}"
[output]
path = {output}
[models."qwen3-32b-awq"]
rps = {rps}
{params}"""


def minimal_job(url: str, output: str = '"out"', rps: str = "2000", params: str = "") -> str:
    return MINIMAL_JOB.format(url=url, output=output, rps=rps, params=params)


@PINNED
@given(
    output=one("news.jsonl", "job.toml", "pq/ok.parquet", "notes.txt")
    | st.text(max_size=4).map(lambda s: f"out{s}\x00")
)
@example(output="news.jsonl")
@example(output="o\x00")
def test_an_output_path_that_cannot_be_a_directory_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator_url: str, output: str
) -> None:
    """An existing file, or a path with a NUL: a message, never a traceback."""
    monkeypatch.setenv("SCIBOX_API_KEY", KEY)
    if "\x00" in output:
        wanted = "job.toml: [output].path: a path cannot hold a NUL character"
    else:
        wanted = f"{output}: cannot create the output directory ([Errno 17] File exists"
    with fresh_directory(tmp_path) as directory:
        write_inputs(directory)
        (directory / "job.toml").write_text(minimal_job(emulator_url, toml_str(output)))
        assert_refused(call("run", "job.toml", "--limit", "3"), wanted)


@PINNED
@given(name=one("_input.json", "_job.json"), content=st.binary(max_size=20))
@example(name="_job.json", content=b"garbage")
def test_a_damaged_bookkeeping_file_in_the_output_is_written_anew_and_the_run_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator_url: str, name: str, content: bytes
) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", KEY)
    try:
        orjson.loads(content)
    except orjson.JSONDecodeError:
        pass
    else:
        return  # only damaged files are of interest here
    with fresh_directory(tmp_path) as directory:
        write_inputs(directory)
        (directory / "job.toml").write_text(minimal_job(emulator_url))
        (directory / "out").mkdir()
        damaged = OutputLayout(directory / "out").state.joinpath(name)
        damaged.write_bytes(content)
        ran = call("run", "job.toml", "--limit", "3")
        assert_clean(ran)
        assert ran.code == 0, ran.err
        assert read_json(damaged) is not None, damaged.read_bytes()


@PINNED
@given(rps=st.floats(min_value=5e-324, max_value=1e-309))
@example(rps=1e-310)
def test_tiny_rps_in_validate_exits_2_naming_the_smallest_rate(tmp_path: Path, rps: float) -> None:
    with fresh_directory(tmp_path) as directory:
        write_inputs(directory)
        (directory / "job.toml").write_text(minimal_job(UNREACHABLE, rps=repr(rps)))
        wanted = f'[models."{CHAT}"].rps: Input should be greater than or equal to 0.001'
        assert_refused(call("validate", "job.toml"), wanted)


@PINNED
@given(value=st.integers(min_value=2**64) | st.integers(max_value=-(2**63) - 1))
@example(value=2**64)
def test_params_with_a_huge_integer_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator_url: str, value: int
) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", KEY)
    with fresh_directory(tmp_path) as directory:
        write_inputs(directory)
        job = minimal_job(emulator_url, params=f"[params]\nseed = {value}\n")
        (directory / "job.toml").write_text(job)
        wanted = "[params]: cannot be sent as JSON (Integer exceeds 64-bit range); use numbers"
        assert_refused(call("run", "job.toml", "--limit", "3"), wanted)


@PINNED
@given(first=st.text(min_size=1, max_size=5), other=st.text(min_size=1, max_size=5))
@example(first="a", other="b")
def test_a_repeated_id_key_is_a_duplicate_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator_url: str, first: str, other: str
) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", KEY)
    if first == other:
        return
    lines = [
        json_line(dumps(first), b'"x one."'),
        json_line(dumps(other), b'"y two."', extra=b', "id": ' + dumps(first)),
    ]
    with fresh_directory(tmp_path) as directory:
        (directory / "news.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        (directory / "job.toml").write_text(CHAT_JOB.format(url=emulator_url))
        assert call("validate", "job.toml").code == 2
        assert call("run", "job.toml").code == 2
