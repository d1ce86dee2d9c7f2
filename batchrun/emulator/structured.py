"""Structured answers: a request's ``response_format`` honoured, deterministically (the
runner's side, checking them: ``batchrun.job.answerschema``).

For ``{"type": "json_schema", "json_schema": {"schema": ...}}`` the answer is JSON that meets
the schema (types, required, enum, minimum/maximum, lengths and item counts), its values drawn
from the extractive summary of the prompt and from a hash of it: same request, same answer.
``{"type": "json_object"}`` gets ``{"answer": <summary>}``. With ``invalid_json_rate`` a share
of requests (chosen by a hash of the request body, so a re-ask draws anew) gets broken JSON or
JSON that violates the schema, half each, for testing re-asks.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

from batchrun.emulator.bodies import BadRequest
from batchrun.emulator.summaries import (
    Message,
    Summary,
    count_tokens,
    parse_reasoning,
    summarise,
    truncate_tokens,
)
from batchrun.job.answerschema import inline_refs
from batchrun.job.catalog import ModelInfo

_CAPITALISED = re.compile(r"\b[A-ZА-ЯЁ][\w-]{2,}")


def response_schema(body: dict[str, object]) -> dict[str, Any] | None:
    """The JSON Schema a body asks its answer to meet (``{}`` for any JSON object), or None."""
    spec = body.get("response_format")
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("type") not in ("json_schema", "json_object", "text"):
        raise BadRequest("'response_format' must be {type: json_schema | json_object | text}")
    if spec["type"] == "text":
        return None
    if spec["type"] == "json_object":
        return {}
    inner = spec.get("json_schema")
    if not isinstance(inner, dict) or not isinstance(inner.get("schema"), dict):
        raise BadRequest("'response_format.json_schema.schema' must be a JSON Schema object")
    schema: dict[str, Any] = inner["schema"]
    return schema


def structured_summary(
    model: ModelInfo,
    messages: tuple[Message, ...],
    max_tokens: int | None,
    schema: dict[str, Any],
    raw: bytes,
    broken: float,
) -> Summary:
    """The answer of a structured request: the model's ``<think>`` block as for any answer,
    then JSON; cut at ``max_tokens`` like any answer."""
    plain = summarise(model, messages, None)
    _, summary = parse_reasoning(plain.content)
    head = plain.content[: len(plain.content) - len(summary)]
    content, finish = head + structured_content(schema, summary, raw, broken), "stop"
    if max_tokens is not None:
        content, cut = truncate_tokens(content, max_tokens)
        finish = "length" if cut else "stop"
    return Summary(content, finish, plain.prompt_tokens, count_tokens(content))


def structured_content(schema: dict[str, Any], summary: str, raw: bytes, broken: float) -> str:
    """The JSON answer for ``schema`` (its local ``$ref``s followed: Pydantic's nested
    models); broken for a ``broken`` share of request bodies."""
    try:
        schema = inline_refs(schema, schema)
    except ValueError as exc:  # a $ref to nothing
        raise BadRequest(f"'response_format.json_schema.schema': {exc}") from None
    value = _value(schema, summary, _seed(raw)) if schema else {"answer": summary}
    draw = _seed(raw + b"#broken") / 2**64
    if draw < broken / 2:
        return orjson.dumps(value).decode()[:-3]  # cut short: not JSON
    if draw < broken:
        return orjson.dumps(_violating(schema, value)).decode()
    return orjson.dumps(value).decode()


def _seed(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _value(schema: dict[str, Any], text: str, seed: int) -> Any:
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][seed % len(schema["enum"])]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {
            name: _value(spec, text, _seed(f"{seed}:{name}".encode()))
            for name, spec in properties.items()
            if isinstance(spec, dict)
        }
    if kind == "array":
        return _array(schema, text, seed)
    if kind in ("integer", "number"):
        low, high = schema.get("minimum", 0), schema.get("maximum", 100)
        number = low + seed % (int(high - low) + 1)
        return number if kind == "integer" else float(number)
    if kind == "boolean":
        return bool(seed % 2)
    if kind == "string":
        return _string(schema, text)
    return None


def _array(schema: dict[str, Any], text: str, seed: int) -> list[Any]:
    low, high = schema.get("minItems", 1), schema.get("maxItems", 3)
    count = max(low, min(high, 1 + seed % 3))
    items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
    assert isinstance(items, dict)
    if items.get("type") == "string" and "enum" not in items:
        words = list(dict.fromkeys(_CAPITALISED.findall(text))) or ["Nothing"]
        return [_string(items, words[i % len(words)]) for i in range(count)]
    return [_value(items, text, _seed(f"{seed}:{i}".encode())) for i in range(count)]


def _string(schema: dict[str, Any], text: str) -> str:
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    value = text[:high] if isinstance(high, int) else text
    return value + "." * max(0, int(low) - len(value))


def _violating(schema: dict[str, Any], value: Any) -> Any:
    """``value`` made invalid: a required property dropped, or a property of the wrong type."""
    if not isinstance(value, dict) or not value:
        return ["not", "an", "object"]
    required = [name for name in schema.get("required", []) if name in value]
    if required:
        return {k: v for k, v in value.items() if k != required[0]}
    name = next(iter(value))
    return {**value, name: {"wrong": "type"}}
