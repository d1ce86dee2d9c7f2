"""Pydantic's validation errors of a job file as batchrun's messages: the key path, what is
wrong and how to fix it (``[run].concurency: unknown key; did you mean 'concurrency'?``)."""

from __future__ import annotations

import difflib
from typing import get_args, get_origin

from pydantic import BaseModel, ValidationError


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
    if section == "models" and rest:
        return f'[models."{rest[0]}"]' + "".join(f".{part}" for part in rest[1:])
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
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
    return (
        f"; did you mean '{close[0]}'?"
        if close
        else f"; known keys: {', '.join(model.model_fields)}"
    )
