"""The answer schema: ``[output].schema`` is a JSON Schema that every structured answer must
meet (the emulator's side, answers made to a schema: ``batchrun.emulator.structured``).

The request asks for it with ``response_format`` (``json_schema``, strict; vLLM behind LiteLLM
turns that into guided decoding). An answer (its ``<think>`` part already split off; a
```` ```json ```` fence tolerated) is parsed with orjson and validated with ``jsonschema``; an
invalid one raises ``InvalidAnswer``, whose message goes back to the model in a re-ask. A valid
answer fills one typed column per top-level property: string, integer, number and boolean;
arrays and objects as Arrow lists and structs where the schema says every type inside, JSON
text otherwise. Local ``$ref``s (``#/$defs/Place``, what Pydantic's ``model_json_schema()``
writes for a nested model) are resolved first, so a nested model is a struct column.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pyarrow as pa

SCALARS: dict[str, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
}
INT64 = (-(2**63), 2**63 - 1)
IMPRECISE = frozenset(
    {
        "prefixItems",
        "additionalItems",
        "patternProperties",
        "$ref",
        "anyOf",
        "oneOf",
        "allOf",
        "if",
        "not",
    }
)
"""Keywords that let a value take shapes its column type does not say: such a property is
kept as JSON text."""
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL | re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
REF_DEPTH = 8
"""``$ref``s followed inside one another; a deeper (recursive) one stays: JSON text."""


class InvalidAnswer(Exception):
    """An answer that is not JSON, or not valid against the schema; the message says why."""


@dataclass(frozen=True)
class AnswerSchema:
    """A job's ``[output].schema``, checked."""

    schema: dict[str, Any]

    @classmethod
    def load(cls, value: Mapping[str, Any] | str) -> AnswerSchema:
        """The schema written inline, or read from the ``.json`` file ``value`` names;
        ValueError saying what to fix."""
        if isinstance(value, str):
            try:
                loaded = orjson.loads(Path(value).read_bytes())
            except OSError as exc:
                raise ValueError(
                    f"cannot read the schema file {value!r} ({exc.strerror})"
                ) from None
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{value} is not JSON ({exc})") from None
        else:
            loaded = dict(value)
        if not isinstance(loaded, dict):
            raise ValueError("a JSON Schema is an object")
        try:
            jsonschema.validators.validator_for(loaded).check_schema(loaded)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        properties = loaded.get("properties")
        if loaded.get("type") != "object" or not isinstance(properties, dict) or not properties:
            raise ValueError('give an object schema: type = "object" with its properties')
        for reference in _references(loaded):
            _resolve(loaded, reference)
        return cls(loaded)

    @functools.cached_property
    def _validator(self) -> Any:
        return jsonschema.validators.validator_for(self.schema)(self.schema)

    @property
    def properties(self) -> dict[str, Any]:
        properties: dict[str, Any] = self.schema["properties"]
        return properties

    def response_format(self) -> dict[str, Any]:
        """What the request carries to ask for this schema."""
        title = self.schema.get("title")
        name = title if isinstance(title, str) and _NAME.match(title) else "answer"
        return {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": self.schema, "strict": True},
        }

    def fields(self) -> list[pa.Field]:
        """One output column per top-level property, local ``$ref``s resolved; an object
        with properties is a struct whether or not it says ``additionalProperties = false``
        (its other keys stay in ``content``)."""
        properties = inline_refs(self.schema, self.schema)["properties"]
        return [pa.field(name, column_type(spec)) for name, spec in properties.items()]

    @property
    def typed_anew(self) -> bool:
        """Whether these columns differ from those batchrun gave this schema before it
        resolved ``$ref``s and typed open objects (an output written then is not mixed)."""
        before = [column_type(spec, closed=True) for spec in self.properties.values()]
        return before != [field.type for field in self.fields()]

    def parse(self, content: str | None) -> dict[str, Any]:
        """The answer as a validated object; InvalidAnswer otherwise."""
        text = (content or "").strip()
        if fenced := _FENCE.match(text):
            text = fenced.group(1)
        try:
            answer = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise InvalidAnswer(f"the answer is not JSON ({exc})") from None
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(answer))
        if error is not None:
            raise InvalidAnswer(
                f"the answer does not match the schema at {error.json_path}: {error.message}"
            )
        assert isinstance(answer, dict)  # the schema's type is object
        return answer

    def values(self, answer: Mapping[str, Any]) -> dict[str, Any]:
        """The typed column values of a validated answer; InvalidAnswer for a value its
        column cannot hold (an integer beyond 64 bits)."""
        try:
            return {f.name: _typed(answer.get(f.name), f.type) for f in self.fields()}
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidAnswer(f"a value does not fit its column: {exc}") from None


def column_type(spec: Any, closed: bool = False) -> pa.DataType:
    """The Arrow type of a property: exact where the schema says every type inside, else
    text (the value as JSON). ``closed``: an object is a struct only with
    ``additionalProperties = false`` (batchrun's rule before Pydantic's nested models)."""
    kind = _single_type(spec)
    if isinstance(spec, dict) and IMPRECISE & set(spec):
        return pa.string()
    if kind in SCALARS:
        return SCALARS[kind]
    if kind == "array" and isinstance(spec.get("items"), dict):
        inner = column_type(spec["items"], closed)
        return pa.list_(inner) if _exact(inner, spec["items"]) else pa.string()
    if kind == "object" and isinstance(spec.get("properties"), dict) and spec["properties"]:
        properties = spec["properties"]
        members = [pa.field(name, column_type(sub, closed)) for name, sub in properties.items()]
        exact = all(_exact(m.type, properties[m.name]) for m in members)
        extra = spec.get("additionalProperties")  # not said: Pydantic's default
        if exact and (extra is False or (extra is None and not closed)):
            return pa.struct(members)
    return pa.string()


def inline_refs(schema: Any, root: dict[str, Any], depth: int = 0) -> Any:
    """``schema`` with each local ``$ref`` replaced by what it points at in ``root`` (its
    sibling keys kept), up to ``REF_DEPTH`` deep (a recursive model keeps its ``$ref``)."""
    if isinstance(schema, list):
        return [inline_refs(item, root, depth) for item in schema]
    if not isinstance(schema, dict):
        return schema
    reference = schema.get("$ref")
    if isinstance(reference, str) and reference.startswith("#") and depth < REF_DEPTH:
        target = _resolve(root, reference)
        rest = {key: value for key, value in schema.items() if key != "$ref"}
        return inline_refs({**target, **rest}, root, depth + 1)
    return {key: inline_refs(value, root, depth) for key, value in schema.items()}


def _single_type(spec: Any) -> str | None:
    """The one JSON type a property allows (null aside), or None."""
    if not isinstance(spec, dict):
        return None
    kind = spec.get("type")
    if isinstance(kind, list):
        others = [k for k in kind if k != "null"]
        kind = others[0] if len(others) == 1 else None
    enum = spec.get("enum")
    if kind is None and isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
        return "string"
    return kind if isinstance(kind, str) else None


def _exact(kind: pa.DataType, spec: Any) -> bool:
    """Whether ``kind`` holds the values of ``spec`` exactly (not as JSON text)."""
    return not pa.types.is_string(kind) or _single_type(spec) == "string"


def _typed(value: Any, kind: pa.DataType) -> Any:
    """A validated value as ``kind`` takes it: JSON text for a text column holding more than
    a string, integers for integer columns (JSON's 2.0 is an integer), floats for numbers."""
    if value is None:
        return None
    if pa.types.is_string(kind):
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    if pa.types.is_integer(kind):
        number = int(value)
        if not INT64[0] <= number <= INT64[1]:
            raise ValueError(f"{value} is beyond a 64-bit integer")
        return number
    if pa.types.is_floating(kind):
        return float(value)
    if pa.types.is_list(kind):
        return [_typed(item, kind.value_type) for item in value]
    if pa.types.is_struct(kind):
        return {f.name: _typed(value.get(f.name), f.type) for f in kind}
    return value


def _references(schema: Any) -> Iterator[str]:
    """Every ``$ref`` in a schema."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _references(item)


def _resolve(schema: dict[str, Any], reference: str) -> Any:
    """What ``reference`` points at inside the schema (``#/$defs/place``); ValueError if
    nothing there."""
    if not reference.startswith("#"):
        raise ValueError(f"$ref {reference!r}: only references inside the schema (#/...) work")
    target: Any = schema
    for token in filter(None, reference[1:].split("/")):
        token = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or token not in target:
            raise ValueError(f"$ref {reference!r} points at nothing in the schema")
        target = target[token]
    return target
