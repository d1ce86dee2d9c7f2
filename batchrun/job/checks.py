"""What is wrong with a job file, said so that the user can fix it: pydantic's validation
errors as our messages (the key path, what is wrong, how to fix it: ``[run].concurency:
unknown key; did you mean 'concurrency'?``), and the rules that span several keys."""

from __future__ import annotations

import difflib
import re
from typing import Any, get_args, get_origin
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ValidationError

from batchrun.job.catalog import MODELS

RESERVED_PARAMS = frozenset({"model", "messages", "input", "stream"})
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def describe(
    exc: ValidationError, file_model: type[BaseModel], tables: frozenset[str]
) -> list[str]:
    """Pydantic's errors as our messages: key path, what is wrong, how to fix it. The errors of
    a union's branches (``model = 3``) become one line for the key."""
    by_key: dict[str, list[str]] = {}
    for error in exc.errors():
        loc = [str(part) for part in error["loc"] if not _is_branch_tag(str(part))]
        key = _key_path(loc, tables)
        if error["type"] == "extra_forbidden":
            message = f"unknown key{_did_you_mean(loc, file_model)}"
        elif error["type"] == "missing":
            message = "missing; this key is required"
        elif error["type"] == "invalid-json-value":  # (a TOML date or time, in [params])
            key = _key_path([part for part in loc if part not in ("dict", "list")], tables)
            message = f"{error['input']!r} is not a JSON value; write it as a string"
        else:
            reason = error["msg"].removeprefix("Value error, ")
            message = f"{reason} (got {error.get('input')!r})"
        by_key.setdefault(key, []).append(message)
    return [f"{key}: {' or '.join(dict.fromkeys(messages))}" for key, messages in by_key.items()]


def _is_branch_tag(part: str) -> bool:
    """pydantic names a union's branches in the error location: 'str', 'tuple[str, ...]'."""
    tagged = part.startswith(("function-", "constrained-"))
    return part in {"str", "int", "float", "bool"} or "[" in part or tagged


def _key_path(loc: list[str], tables: frozenset[str]) -> str:
    if len(loc) == 1:
        return f"[{loc[0]}]" if loc[0] in tables else loc[0]
    section, *rest = loc
    if section in ("models", "pricing") and rest:
        return f'[{section}."{rest[0]}"]' + "".join(f".{part}" for part in rest[1:])
    return f"[{section}]" + "".join(f".{part}" for part in rest)


def _did_you_mean(loc: list[str], file_model: type[BaseModel]) -> str:
    """'; did you mean 'concurrency'?' when a known key is close to the unknown one."""
    model = file_model
    parts = iter(loc[:-1])
    for part in parts:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if get_origin(annotation) is dict:  # [models."NAME"]: skip the name, look at the value
            annotation = get_args(annotation)[1]
            next(parts, None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    keys = [field.alias or name for name, field in model.model_fields.items()]
    close = difflib.get_close_matches(loc[-1], keys, n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(keys)}"


def check_consistency(raw: dict[str, Any]) -> list[str]:
    """Rules that span several keys, checked on the raw file so that they are reported
    together with the per-key errors."""
    return _check_models(raw) + _check_sections(raw) + _check_urls(raw)


def _check_models(raw: dict[str, Any]) -> list[str]:
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
    return problems


def _check_batch_file(raw: dict[str, Any]) -> list[str]:
    """An OpenAI batch file's lines say the kind, the model and the messages of each request;
    any other job says them in the file."""
    source = raw.get("input")
    if not (isinstance(source, dict) and source.get("format") == "openai-batch"):
        problems = [
            f"{key}: missing; this key is required" for key in ("kind", "model") if key not in raw
        ]
        if isinstance(source, dict) and "bad_lines" in source:
            problems.append(
                '[input].bad_lines: only for [input].format = "openai-batch"; remove it'
            )
        return problems
    given: list[str] = [key for key in ("kind", "model", "prompt") if key in raw]
    output, run = raw.get("output"), raw.get("run")
    if isinstance(output, dict) and "schema" in output:
        given.append("[output].schema")
    if isinstance(run, dict) and "fallback_model" in run:
        given.append("[run].fallback_model")
    return [
        f'{"[prompt]" if key == "prompt" else key}: [input].format = "openai-batch" sends each '
        "line's body as written, to the model it names; remove it"
        for key in given
    ]


def _check_sections(raw: dict[str, Any]) -> list[str]:
    problems = _check_batch_file(raw)
    kind, output, params = raw.get("kind"), raw.get("output"), raw.get("params")
    if kind == "chat" and "prompt" not in raw:
        problems.append('[prompt]: a chat job needs [prompt] with user = "...{column}..."')
    if kind == "embeddings" and "prompt" in raw:
        problems.append("[prompt]: an embeddings job sends [input].text as is; remove [prompt]")
    schema = isinstance(output, dict) and "schema" in output
    if kind == "embeddings" and schema:
        problems.append("[output].schema: structured answers are for chat jobs; remove it")
    given = set(params) if isinstance(params, dict) else set()
    reserved = RESERVED_PARAMS | ({"response_format"} if schema else set())
    for key in sorted(reserved & given):
        problems.append(f"[params].{key}: set by batchrun itself; remove it from [params]")
    try:
        orjson.dumps(params)
    except TypeError as exc:  # a date, or an integer beyond 64 bits
        problems.append(f"[params]: cannot be sent as JSON ({exc}); use numbers, text, lists")
    return problems


def _check_urls(raw: dict[str, Any]) -> list[str]:
    """The endpoint's URL holds no credentials; a shared limiter's is a Redis URL. The
    messages show a URL with its password hidden."""
    problems = []
    endpoint, limits = raw.get("endpoint"), raw.get("limits")
    base_url = endpoint.get("base_url") if isinstance(endpoint, dict) else None
    if isinstance(base_url, str) and "@" in re.split(r"[/?#]", base_url.partition("://")[2])[0]:
        problems.append(
            f"[endpoint].base_url: {redacted(base_url)} holds a user name or password; remove "
            "them: batchrun sends the token of [endpoint].api_key_env (SCIBOX_API_KEY) itself"
        )
    shared = limits.get("shared") if isinstance(limits, dict) else None
    if isinstance(shared, str) and (problem := redis_url_problem(shared)):
        problems.append(f"[limits].shared: {problem}")
    return problems


def redis_url_problem(url: str) -> str | None:
    """Why redis-py cannot use ``url`` (None: it can), said with the password hidden and the
    fix; for ``[limits].shared`` and ``BATCHRUN_LIMITS_URL``."""
    if not url.startswith(REDIS_SCHEMES):
        problem = "not a Redis URL"
    else:
        try:
            _ = urlsplit(url).port  # ValueError: not a number, or out of range
            return None
        except ValueError:
            problem = "its port is not a number from 0 to 65535"
    return (
        f"{problem} ({redacted(url)}); write redis://HOST:PORT/DB (rediss:// for TLS, "
        "unix:///path/to/redis.sock), or remove it to pace this process alone"
    )


def redacted(url: str) -> str:
    """``url`` with its user info (``user:password@``: a token may be either) hidden, however
    malformed the rest: fit for a message."""
    head, at, host = url.rpartition("@")
    if not at:
        return url
    start = head.find("//") + 2 if "//" in head else 0
    return f"{head[:start]}***@{host}"
