"""Request bodies checked at the boundary: JSON in, typed requests out, or a 400 that says why.

The handlers see only :class:`ChatRequest` and :class:`EmbeddingRequest`. Every rejection is a
:class:`BadRequest` whose message names the field (``messages[2].content must be a string``),
so the runner's error column tells the user what to fix. For embeddings one bad string (empty,
or over :data:`MAX_INPUT_CHARS`) rejects the whole request, as the service does: the runner
bisects a rejected batch to find it.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from batchrun.emulator.summaries import Message
from batchrun.job.catalog import MODELS, ModelInfo

MAX_INPUT_CHARS = 32_000
ROLES = frozenset({"system", "user", "assistant", "developer", "tool"})
ENCODINGS = frozenset({"float", "base64"})


class BadRequest(Exception):
    """The payload is wrong (400); the message says what to fix."""


class UnknownModel(Exception):
    """The named model is not served (404, or LiteLLM's 400); ``name`` is what was asked for."""

    def __init__(self, name: str) -> None:
        super().__init__(f"The model '{name}' does not exist; served: {', '.join(MODELS)}")
        self.name = name


@dataclass(frozen=True)
class ChatRequest:
    """A checked ``/v1/chat/completions`` body; ``include_usage`` is
    ``stream_options.include_usage`` being true."""

    model: ModelInfo
    messages: tuple[Message, ...]
    max_tokens: int | None
    stream: bool
    include_usage: bool = False


@dataclass(frozen=True)
class EmbeddingRequest:
    """A checked ``/v1/embeddings`` body; ``encoding_format`` is "float" or "base64"."""

    model: ModelInfo
    inputs: tuple[str, ...]
    encoding_format: str


def parse_body(raw: bytes) -> dict[str, object]:
    """The JSON object of a request body."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(body).__name__}")
    return body


def find_model(body: dict[str, object]) -> ModelInfo:
    """The served model named by ``body["model"]``."""
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise BadRequest("'model' is required and must be a string")
    info = MODELS.get(name)
    if info is None:
        raise UnknownModel(name)
    return info


def chat_request(body: dict[str, object], model: ModelInfo, typed: bool = False) -> ChatRequest:
    """Check a chat body for ``model`` (already found by :func:`find_model`); ``typed`` adds
    the checks of vLLM's typed request (:func:`check_sampling`)."""
    if model.kind != "chat":
        raise BadRequest(f"'{model.name}' is an embedding model: use /v1/embeddings")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise BadRequest("'messages' must be a non-empty list of {role, content} objects")
    messages = tuple(_message(i, item) for i, item in enumerate(raw))
    limit = body.get("max_tokens", body.get("max_completion_tokens"))
    if limit is not None and (type(limit) is not int or limit < 1):
        raise BadRequest(f"'max_tokens' must be a positive integer, got {limit!r}")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest(f"'stream' must be true or false, got {stream!r}")
    if typed:
        check_sampling(body)
    return ChatRequest(model, messages, limit, stream, _include_usage(body))


def check_sampling(body: dict[str, object]) -> None:
    """The sampling parameters have the types (and ranges) vLLM's request model demands:
    ``temperature`` a number >= 0, ``top_p`` a number in (0, 1], ``stream_options`` an object.
    """
    temperature, top_p = _number(body, "temperature"), _number(body, "top_p")
    if temperature is not None and temperature < 0:
        raise BadRequest(f"'temperature' must be non-negative, got {temperature!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise BadRequest(f"'top_p' must be in (0, 1], got {top_p!r}")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest(f"'stream_options' must be an object, got {options!r}")


def _number(body: dict[str, object], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"'{name}' must be a number, got {value!r}")
    return float(value)


def _include_usage(body: dict[str, object]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _message(index: int, item: object) -> Message:
    if not isinstance(item, dict):
        raise BadRequest(f"messages[{index}] must be an object with 'role' and 'content'")
    role, content = item.get("role"), item.get("content")
    if not isinstance(role, str) or role not in ROLES:
        raise BadRequest(f"messages[{index}].role must be one of {sorted(ROLES)}, got {role!r}")
    if not isinstance(content, str):
        raise BadRequest(f"messages[{index}].content must be a string")
    return role, content


def embedding_request(body: dict[str, object], model: ModelInfo) -> EmbeddingRequest:
    """Check an embeddings body for ``model`` (already found by :func:`find_model`)."""
    if model.kind != "embeddings":
        raise BadRequest(f"'{model.name}' is a chat model: use /v1/chat/completions")
    raw = body.get("input")
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise BadRequest("'input' must be a non-empty string or a non-empty list of strings")
    for i, text in enumerate(items):
        _check_input(i, text)
    encoding = body.get("encoding_format") or "float"
    if encoding not in ENCODINGS:
        raise BadRequest(f"'encoding_format' must be 'float' or 'base64', got {encoding!r}")
    dimensions = body.get("dimensions")
    if dimensions is not None and dimensions != model.dimensions:
        raise BadRequest(f"'{model.name}' has {model.dimensions} dimensions, got {dimensions!r}")
    return EmbeddingRequest(model, tuple(items), str(encoding))


def _check_input(index: int, text: object) -> None:
    if not isinstance(text, str):
        raise BadRequest(f"input[{index}] must be a string, got {type(text).__name__}")
    if not text:
        raise BadRequest(f"input[{index}] is an empty string")
    if len(text) > MAX_INPUT_CHARS:
        raise BadRequest(
            f"input[{index}] has {len(text)} characters; the limit is {MAX_INPUT_CHARS}"
        )
