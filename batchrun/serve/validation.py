"""The ``validating`` step: every line of a batch's input file checked as OpenAI checks it,
each bad line reported with its number and OpenAI's code (``errors.data`` of a failed batch).

The rules of a line are the batch's job's own (its task's ``problem``: method, url, body,
model, stream, as ``batchrun run`` checks them), plus what OpenAI adds for a batch: JSON
objects only, a string ``custom_id`` used once, the batch's endpoint, a model the upstream
serves. Lines are read as bytes one at a time; of the ids only a 64-bit digest each is held
(duplicates).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

Rules = Callable[[Mapping[str, Any]], str | None]
"""A line's problem by the job's task (``Task.problem``), or None."""


@dataclass
class Checked:
    """What validating found: the lines to run, and the bad ones."""

    total: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    models: set[str] = field(default_factory=set)

    def bad(self, line: int, code: str, message: str, param: str | None = None) -> None:
        self.errors.append({"code": code, "message": message, "param": param, "line": line})


def check_file(path: Path, endpoint: str, served: frozenset[str] | None, rules: Rules) -> Checked:
    """Every line of ``path`` against a batch for ``endpoint`` and the task's ``rules``;
    ``served`` the models the upstream serves (None: not known, not checked)."""
    checked, seen = Checked(), set()
    for number, values in _objects(path, checked):
        checked.total += 1
        custom_id = values.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            checked.bad(number, "missing_required_parameter", _MISSING_ID, "custom_id")
            continue
        digest = hashlib.blake2b(custom_id.encode(), digest_size=8).digest()
        if digest in seen:
            checked.bad(number, "duplicate_custom_id", _DUPLICATE, "custom_id")
            continue
        seen.add(digest)
        _check_request(number, values, endpoint, served, rules, checked)
    if checked.total == 0 and not checked.errors:
        checked.bad(0, "empty_file", "The batch input file is empty.")
    return checked


def _objects(path: Path, checked: Checked) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                values = orjson.loads(line)
            except orjson.JSONDecodeError:
                checked.total += 1
                checked.bad(
                    number, "invalid_json_line", "This line is not parseable as valid JSON."
                )
                continue
            if not isinstance(values, dict):
                checked.total += 1
                checked.bad(number, "invalid_json_line", "This line is not a JSON object.")
                continue
            yield number, values


def _check_request(
    number: int,
    values: dict[str, Any],
    endpoint: str,
    served: frozenset[str] | None,
    rules: Rules,
    checked: Checked,
) -> None:
    if values.get("url") != endpoint:
        message = (
            f"The URL provided for this request ({values.get('url')!r}) does not match the "
            f"batch endpoint ({endpoint!r})."
        )
        checked.bad(number, "invalid_url", message, "url")
        return
    if (problem := rules(values)) is not None:
        code = "invalid_method" if problem.startswith("method") else "invalid_request"
        checked.bad(number, code, f"Invalid request: {problem}.", "body")
        return
    model = str(values["body"]["model"])
    if served is not None and model not in served:
        message = f"The model '{model}' does not exist or you do not have access to it."
        checked.bad(number, "model_not_found", message, "body.model")
        return
    checked.models.add(model)


_NOT_JSON = "This line is not parseable as valid JSON."
_MISSING_ID = "Missing required parameter: 'custom_id' (a non-empty string)."
_DUPLICATE = (
    "The custom_id for this request is a duplicate of another request. The custom_id "
    "parameter must be unique for each individual request in a batch."
)
