"""The job file: a TOML contract, validated once at the boundary into frozen, typed objects.

``load_job(path)`` reads the file, checks every key with pydantic (unknown keys fail loudly,
with a "did you mean" hint) and reports every problem at once, each with its key path:
``jobs/x.toml: [run].concurency: unknown key; did you mean 'concurrency'?``.
The rest of batchrun sees ``Job`` and never a dict.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import string
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from batchrun.errors import JobError
from batchrun.service.catalog import MODELS, Kind, model_rps

LOCAL = "local"
RESERVED_PARAMS = frozenset({"model", "messages", "input", "stream"})
TABLES = frozenset({"endpoint", "input", "prompt", "params", "output", "run", "limits", "models"})


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


class PromptSpec(_Section):
    system: str | None = None
    user: str

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


class JobFile(_Section):
    """The TOML file as written; ``Job`` adds what is derived from it."""

    name: str | None = None
    kind: Kind
    model: str | tuple[str, ...]
    endpoint: EndpointSpec = EndpointSpec()
    input: InputSpec
    prompt: PromptSpec | None = None
    params: dict[str, Any] = {}
    output: OutputSpec
    run: RunSpec = RunSpec()
    limits: LimitsSpec = LimitsSpec()
    models: dict[str, ModelSpec] = {}


class Job:
    """A validated job: the file's settings plus what follows from them."""

    def __init__(self, source: Path, spec: JobFile) -> None:
        self.source = source
        self.spec = spec
        self.name = spec.name or source.stem
        self.kind: Kind = spec.kind
        self.models: tuple[str, ...] = (
            (spec.model,) if isinstance(spec.model, str) else tuple(spec.model)
        )
        overrides = {name: m.rps for name, m in spec.models.items()}
        self.fallback = spec.run.fallback_model
        every = self.models + ((self.fallback,) if self.fallback else ())
        self.rps = {name: model_rps(name, overrides) for name in every}

    def __repr__(self) -> str:
        return f"Job({self.name!r}, kind={self.kind!r}, models={self.models!r})"

    @property
    def model_keys(self) -> dict[str, str]:
        """Every model the job may send to, with the job-file key that names it."""
        keys = {name: "model" for name in self.models}
        if self.fallback and self.fallback not in keys:
            keys[self.fallback] = "[run].fallback_model"
        return keys

    @property
    def input_columns(self) -> tuple[str, ...]:
        """The input columns the job reads: id, the texts it sends, the columns it keeps."""
        wanted = [self.spec.input.id, *self.text_columns, *self.spec.output.keep]
        return tuple(dict.fromkeys(wanted))

    @property
    def text_columns(self) -> tuple[str, ...]:
        """The columns that go into a request."""
        if self.kind == "embeddings":
            return (self.spec.input.text,)
        assert self.spec.prompt is not None
        names = template_fields(self.spec.prompt.user)
        if self.spec.prompt.system:
            names += template_fields(self.spec.prompt.system)
        return tuple(dict.fromkeys(names))

    def fingerprint(self) -> str:
        """A digest of everything that shapes the requests and the output's columns: two jobs
        with equal fingerprints send the same requests and write rows of the same shape."""
        shape = {
            "kind": self.kind,
            "models": self.models,
            "prompt": self.spec.prompt.model_dump() if self.spec.prompt else None,
            "params": self.spec.params,
            "text": self.spec.input.text if self.kind == "embeddings" else None,
            "keep": self.spec.output.keep,  # the output's columns: parts must agree on them
        }
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
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobError(f"{path}: no such job file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise JobError(f"{path}: not valid TOML: {exc}") from None
    problems = []
    try:
        spec = JobFile.model_validate(raw)
    except ValidationError as exc:
        problems = _describe(exc)
    problems += _check_consistency(raw)
    if problems:
        raise JobError("\n".join(f"{path}: {line}" for line in problems))
    return Job(path, spec)


def _check_consistency(raw: dict[str, Any]) -> list[str]:
    """Rules that span several keys, checked on the raw file so that they are reported
    together with the per-key errors."""
    problems = []
    kind, model = raw.get("kind"), raw.get("model")
    models = [model] if isinstance(model, str) else model if isinstance(model, list) else []
    keys = [("model", name) for name in models]
    run = raw.get("run")
    if isinstance(run, dict) and isinstance(fallback := run.get("fallback_model"), str):
        keys.append(("[run].fallback_model", fallback))
    if isinstance(model, list) and not model:
        problems.append("model: give at least one model name")
    for key, name in keys:
        info = MODELS.get(name) if isinstance(name, str) else None
        if info and kind in ("chat", "embeddings") and info.kind != kind:
            article = "an" if info.kind == "embeddings" else "a"
            problems.append(
                f"{key}: '{name}' is {article} {info.kind} model but kind = \"{kind}\"; "
                f'use kind = "{info.kind}" or another model'
            )
    if kind == "chat" and "prompt" not in raw:
        problems.append('[prompt]: a chat job needs [prompt] with user = "...{column}..."')
    if kind == "embeddings" and "prompt" in raw:
        problems.append("[prompt]: an embeddings job sends [input].text as is; remove [prompt]")
    params = raw.get("params")
    for key in sorted(RESERVED_PARAMS & set(params if isinstance(params, dict) else ())):
        problems.append(f"[params].{key}: set by batchrun itself; remove it from [params]")
    try:
        orjson.dumps(params)
    except TypeError as exc:  # a date, or an integer beyond 64 bits
        problems.append(f"[params]: cannot be sent as JSON ({exc}); use numbers, text, lists")
    return problems


def _describe(exc: ValidationError) -> list[str]:
    """Pydantic's errors as our messages: key path, what is wrong, how to fix it. The errors of
    a union's branches (``model = 3``) become one line for the key."""
    by_key: dict[str, list[str]] = {}
    for error in exc.errors():
        loc = [str(part) for part in error["loc"] if not _is_branch_tag(str(part))]
        key = _key_path(loc)
        if error["type"] == "extra_forbidden":
            message = f"unknown key{_did_you_mean(loc)}"
        elif error["type"] == "missing":
            message = "missing; this key is required"
        else:
            reason = error["msg"].removeprefix("Value error, ")
            message = f"{reason} (got {error.get('input')!r})"
        by_key.setdefault(key, []).append(message)
    return [f"{key}: {' or '.join(dict.fromkeys(messages))}" for key, messages in by_key.items()]


def _is_branch_tag(part: str) -> bool:
    """pydantic names a union's branches in the error location: 'str', 'tuple[str, ...]'."""
    tagged = part.startswith(("function-", "constrained-"))
    return part in {"str", "int", "float", "bool"} or "[" in part or tagged


def _key_path(loc: list[str]) -> str:
    if len(loc) == 1:
        return f"[{loc[0]}]" if loc[0] in TABLES else loc[0]
    section, *rest = loc
    if section == "models" and rest:
        return f'[models."{rest[0]}"]' + "".join(f".{part}" for part in rest[1:])
    return f"[{section}]" + "".join(f".{part}" for part in rest)


def _did_you_mean(loc: list[str]) -> str:
    """'; did you mean 'concurrency'?' when a known key is close to the unknown one."""
    model: type[BaseModel] = JobFile
    parts = iter(loc[:-1])
    for part in parts:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if get_origin(annotation) is dict:  # [models."NAME"]: skip the name, look at the value
            annotation = get_args(annotation)[1]
            next(parts, None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
    return (
        f"; did you mean '{close[0]}'?"
        if close
        else f"; known keys: {', '.join(model.model_fields)}"
    )
