"""The job file: a TOML contract, validated once at the boundary into frozen, typed objects.

``load_job(path)`` reads the file, checks every key with pydantic (unknown keys fail loudly,
with a "did you mean" hint) and reports every problem at once, each with its key path:
``jobs/x.toml: [run].concurency: unknown key; did you mean 'concurrency'?``.
The rest of batchrun sees ``Job`` and never a dict.
"""

from __future__ import annotations

import hashlib
import json
import string
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from batchrun.errors import JobError
from batchrun.job.answerschema import AnswerSchema
from batchrun.job.catalog import Kind, model_rps
from batchrun.job.checks import check_consistency, describe

LOCAL = "local"
TABLES = frozenset(
    {"endpoint", "input", "prompt", "params", "output", "run", "limits", "models", "pricing"}
)


class BatchId(str):
    """The id column of an OpenAI batch file (``custom_id``). Its lines are read leniently: a
    line that is not a JSON object, or whose ``custom_id`` is not a non-empty string, is a bad
    line of the file for ``tasks.openai_batch`` to name (``UNREADABLE`` among its values says
    why it could not be read), never an error that stops the reading. Such a line's row id is
    its place in the file, ``batch.jsonl:40``."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EndpointSpec(_Section):
    base_url: str = LOCAL
    api_key_env: str = "SCIBOX_API_KEY"

    @property
    def is_local(self) -> bool:
        return self.base_url == LOCAL


def _no_nul(value: str) -> str:
    if "\0" in value:
        raise ValueError("a path cannot hold a NUL character")
    return value


PathText = Annotated[str, AfterValidator(_no_nul)]


class InputSpec(_Section):
    path: PathText
    id: str = "id"
    text: str = "text"
    format: Literal["rows", "openai-batch"] = "rows"
    """``openai-batch``: lines of OpenAI's batch file format, each a whole request."""
    bad_lines: Literal["fail-file", "fail-line"] = "fail-file"
    """A batch file's lines that cannot be sent: refuse the file (as OpenAI's validation
    does), or write each as a failed row with its reason and run the rest (as vLLM does)."""


class PromptSpec(_Section):
    system: str | None = None
    user: str | None = None
    messages: str | None = None
    """A column holding each row's conversation (an OpenAI messages list), instead of ``user``."""

    @model_validator(mode="after")
    def _user_or_messages(self) -> PromptSpec:
        if (self.user is None) == (self.messages is None):
            raise ValueError(
                'give user = "...{column}..." (a template) or messages = "column" (a column '
                "of conversations), not both"
            )
        return self

    @field_validator("system", "user")
    @classmethod
    def _template_is_well_formed(cls, value: str | None) -> str | None:
        if value is not None:
            template_fields(value)
        return value


class OutputSpec(_Section):
    path: PathText
    keep: tuple[str, ...] = ()
    part_rows: int = Field(default=20_000, ge=1)
    answer_schema: dict[str, Any] | str | None = Field(default=None, alias="schema")
    """A JSON Schema for structured answers (``job.answerschema``), or a .json file's path."""


class RunSpec(_Section):
    concurrency: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    max_in_flight: int = Field(default=256, ge=1, le=4096)
    max_attempts: int = Field(default=8, ge=1, le=100)
    timeout_s: float = Field(default=120.0, gt=0)
    batch_size: int = Field(default=64, ge=1, le=2048)
    batch_tokens: int | None = Field(default=None, ge=1)
    fallback_model: str | None = None
    fallback_after: int = Field(default=3, ge=1)
    stream: bool = False
    idle_timeout_s: float = Field(default=60.0, gt=0)
    grace_s: float = Field(default=10.0, ge=0)
    backoff_base_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)
    server_error_wait_s: float = Field(default=5.0, ge=0)
    max_reasks: int = Field(default=2, ge=0, le=10)
    accept_cut: bool = False
    event_log: bool = True
    """Trace every request attempt in the output directory, for ``batchrun report``."""

    @property
    def fixed_in_flight(self) -> int | None:
        """A fixed number of requests in flight, or None for "auto" (Little's law)."""
        return None if self.concurrency == "auto" else min(self.concurrency, self.max_in_flight)

    @property
    def most_in_flight(self) -> int:
        """The most requests ever in flight (and connections open)."""
        return self.fixed_in_flight or self.max_in_flight


class LimitsSpec(_Section):
    shared: str | None = None
    workspace: str | None = None


class ModelSpec(_Section):
    rps: float = Field(ge=0.001, le=1e9)


class PriceSpec(_Section):
    """What a million tokens of a model cost (any currency: the summary's cost is in it)."""

    input_per_mtok: float = Field(default=0.0, ge=0)
    output_per_mtok: float = Field(default=0.0, ge=0)


class JobFile(_Section):
    """The TOML file as written; ``Job`` adds what is derived from it."""

    name: str | None = None
    kind: Kind | None = None
    model: str | tuple[str, ...] | None = None
    endpoint: EndpointSpec = EndpointSpec()
    input: InputSpec
    prompt: PromptSpec | None = None
    params: dict[str, JsonValue] = {}
    output: OutputSpec
    run: RunSpec = RunSpec()
    limits: LimitsSpec = LimitsSpec()
    models: dict[str, ModelSpec] = {}
    pricing: dict[str, PriceSpec] = {}


JobKind = Literal["chat", "embeddings", "openai-batch"]
BATCH_FILE_COLUMNS = ("custom_id", "method", "url", "body")
"""The fields of a line of an OpenAI batch file; ``custom_id`` is the row's id."""


class Job:
    """A validated job: the file's settings plus what follows from them."""

    def __init__(self, source: Path, spec: JobFile) -> None:
        self.source = source
        self.spec = spec
        self.name = spec.name or source.stem
        batch = spec.input.format == "openai-batch"
        self.kind: JobKind = "openai-batch" if batch else spec.kind or "chat"
        self.models: tuple[str, ...] = (
            () if spec.model is None
            else (spec.model,) if isinstance(spec.model, str)
            else tuple(spec.model)
        )  # fmt: skip
        overrides = {name: m.rps for name, m in spec.models.items()}
        self.fallback = spec.run.fallback_model
        every = self.models + ((self.fallback,) if self.fallback else ())
        self.rps = {name: model_rps(name, overrides) for name in every}
        schema = spec.output.answer_schema
        self.answer_schema = AnswerSchema.load(schema) if schema is not None else None
        """The checked ``[output].schema`` (ValueError when it is not a usable schema)."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str | Path = "<job>") -> Job:
        """A job from the keys a job file holds (a dict built in code, or a parsed TOML
        file), validated the same way; JobError listing every problem, each with its key."""
        source = Path(source)
        problems = []
        try:
            spec = JobFile.model_validate(raw)
        except ValidationError as exc:
            problems = describe(exc, JobFile, TABLES)
        problems += check_consistency(raw)
        if problems:
            raise JobError("\n".join(f"{source}: {line}" for line in problems))
        try:
            return cls(source, spec)
        except ValueError as exc:  # the schema
            raise JobError(f"{source}: [output].schema: {exc}") from None

    def with_models(self, models: tuple[str, ...]) -> Job:
        """This job sending to ``models`` (those a batch file's lines name)."""
        return Job(self.source, self.spec.model_copy(update={"model": models}))

    def __repr__(self) -> str:
        return f"Job({self.name!r}, kind={self.kind!r}, models={self.models!r})"

    @property
    def prices(self) -> dict[str, tuple[float, float]]:
        """``[pricing]``: per model, the cost of a million tokens in and out."""
        return {m: (p.input_per_mtok, p.output_per_mtok) for m, p in self.spec.pricing.items()}

    @property
    def id_column(self) -> str:
        return BatchId(BATCH_FILE_COLUMNS[0]) if self.kind == "openai-batch" else self.spec.input.id

    @property
    def models_named_by(self) -> dict[str, str]:
        """Every model the job may send to, with the job-file key that names it."""
        named_by = "a line's body.model" if self.kind == "openai-batch" else "model"
        keys = {name: named_by for name in self.models}
        if self.fallback and self.fallback not in keys:
            keys[self.fallback] = "[run].fallback_model"
        return keys

    @property
    def input_columns(self) -> tuple[str, ...]:
        """The input columns the job reads: id, the texts it sends, the columns it keeps."""
        wanted = [self.id_column, *self.text_columns, *self.spec.output.keep]
        return tuple(dict.fromkeys(wanted))

    @property
    def text_columns(self) -> tuple[str, ...]:
        """The columns that go into a request."""
        if self.kind == "openai-batch":
            return BATCH_FILE_COLUMNS[1:]
        if self.kind == "embeddings":
            return (self.spec.input.text,)
        assert self.spec.prompt is not None
        prompt = self.spec.prompt
        names = [prompt.messages] if prompt.messages else template_fields(prompt.user or "")
        if self.spec.prompt.system:
            names += template_fields(self.spec.prompt.system)
        return tuple(dict.fromkeys(names))

    def fingerprint(self) -> str:
        """A digest of everything that shapes the requests and the output's columns: two jobs
        with equal fingerprints send the same requests and write rows of the same shape."""
        prompt = self.spec.prompt.model_dump(exclude={"messages"}) if self.spec.prompt else None
        if prompt is not None and self.spec.prompt and self.spec.prompt.messages:
            prompt["messages"] = self.spec.prompt.messages  # (written only when set: the
            # fingerprints of jobs older than the key stay as they were)
        shape: dict[str, Any] = {
            "kind": self.kind,
            "models": self.models if self.kind != "openai-batch" else (),  # (the lines say)
            "prompt": prompt,
            "params": self.spec.params,
            "text": self.spec.input.text if self.kind == "embeddings" else None,
            "keep": self.spec.output.keep,  # the output's columns: parts must agree on them
        }
        if self.answer_schema is not None:
            shape["schema"] = self.answer_schema.schema
            if self.answer_schema.typed_anew:  # an older batchrun's output of this schema has
                # other columns: it is refused, never mixed with this job's rows
                shape["columns"] = [str(field.type) for field in self.answer_schema.fields()]
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def template_fields(template: str) -> list[str]:
    """The column names a ``{column}`` template uses; a malformed template raises ValueError."""
    names = []
    for _, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise ValueError(
                f"placeholder {{{field}}} must be a plain column name like {{text}}; "
                "write {{ and }} for literal braces"
            )
        names.append(field)
    return names


def load_job(path: str | Path) -> Job:
    """Read and validate a job file; raise JobError listing every problem, each with its key."""
    path = Path(path)
    return Job.from_dict(read_toml(path, "job file"), path)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The TOML file at ``path`` (a ``what``: "job file"); JobError saying what is wrong."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise JobError(f"{path}: not valid TOML: {exc}") from None
