"""Service answers become typed results: chat content with Qwen3's ``<think>`` block split off,
embedding vectors in input order, and SSE streams accumulated into one answer.
"""

from __future__ import annotations

import binascii
import re
from array import array
from dataclasses import dataclass
from typing import Any

import numpy
import orjson

from batchrun.errors import RetryableError
from batchrun.service.ratelimits import Quota

THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    content: str
    reasoning: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    quota: Quota | None = None
    """The request budget the service stated with this answer."""


@dataclass(frozen=True, slots=True)
class EmbeddingAnswer:
    vectors: list[bytes]
    """Each vector as little-endian float32 bytes: compact, and straight into Arrow."""
    prompt_tokens: int | None
    completion_tokens: int | None = None
    """Embeddings produce no tokens; here so that every answer counts tokens the same way."""
    quota: Quota | None = None


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """An answer kept as the service sent it (for OpenAI batch files): its JSON body, the
    request id the service gave it, and its usage."""

    body: bytes
    request_id: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    quota: Quota | None = None


def raw_answer(raw: bytes, body: dict[str, Any], request_id: str | None) -> RawAnswer:
    return RawAnswer(raw, request_id, *_usage(body.get("usage")))


def split_think(content: str, reasoning: str | None = None) -> tuple[str, str | None]:
    """(answer, reasoning): a leading ``<think>…</think>`` block is moved to the reasoning.

    An empty block (Qwen3 with ``/no_think``) gives no reasoning. A server that already
    separates the reasoning (``reasoning_content``) passes it in ``reasoning``.
    """
    match = THINK.match(content)
    if match:
        reasoning = (reasoning or "") + match.group(1)
        content = content[match.end() :]
    reasoning = reasoning.strip() if reasoning else None
    return content.strip(), reasoning or None


def chat_answer(body: dict[str, Any]) -> ChatAnswer:
    """A ``chat.completion`` object as a ChatAnswer; a malformed one is retried, and so is
    ``content: null`` unless the answer was cut (a reasoning model that spent ``max_tokens``
    thinking sends no content)."""
    try:
        choice = body["choices"][0]
        message = choice["message"]
        finish_reason = choice.get("finish_reason")
        if message.get("content") is None and finish_reason != "length":
            raise RetryableError(NO_CONTENT)
        content = _text(message.get("content"))
        reasoning = _text(_reasoning(message)) or None
        answer, thought = split_think(content, reasoning)
        prompt, completion = _usage(body.get("usage"))
        return ChatAnswer(answer, thought, finish_reason, prompt, completion)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise RetryableError("the service answered without a usable choices[0].message") from None


NO_CONTENT = "the service answered with content: null (no text)"


def _usage(usage: object) -> tuple[int | None, int | None]:
    """(prompt, completion) tokens of a ``usage`` object; unknown where malformed."""
    if not isinstance(usage, dict):
        return None, None
    return _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))


def _text(value: object) -> str:
    """Message content as text: a string, or OpenAI's list of ``{"type": "text"}`` parts."""
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list):
        return "".join(part["text"] for part in value if part.get("type") == "text")
    raise ValueError(f"content of type {type(value).__name__}")


def _reasoning(message: dict[str, Any]) -> object:
    """A message's or delta's separate reasoning: ``reasoning_content`` (vLLM's reasoning
    parser, LiteLLM) or ``reasoning`` (newer vLLM, OpenRouter)."""
    return message.get("reasoning_content") or message.get("reasoning")


def _count(value: object) -> int | None:
    """A token count as stated; anything but a whole number >= 0 is unknown (None)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def embedding_answer(body: dict[str, Any], expected: int) -> EmbeddingAnswer:
    """An embeddings ``list`` object as vectors in input order (by each item's ``index``).

    A vector may come as base64 of float32 (``encoding_format: "base64"``, what we ask for)
    or as a list of numbers (a server that ignores the format). The answer must hold each
    index ``0..expected-1`` exactly once, and finite numbers only: anything else is malformed
    (retried), never a row written with another text's vector.
    """
    try:
        data = body["data"]
        by_index = {_index(item["index"]): item["embedding"] for item in data}
        if len(data) != expected or sorted(by_index) != list(range(expected)):
            indexes = sorted(_index(item["index"]) for item in data)
            raise RetryableError(
                f"the service answered {expected} inputs with indexes {_shorten(indexes)}, "
                f"not each of 0..{expected - 1} once"
            )
        vectors = [_float32_bytes(by_index[i]) for i in range(expected)]
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise RetryableError("the service answered without data[].embedding") from None
    if not numpy.isfinite(numpy.frombuffer(b"".join(vectors), dtype="<f4")).all():
        raise RetryableError("the service sent a vector holding NaN or infinity")
    return EmbeddingAnswer(vectors, _usage(body.get("usage"))[0])


def _index(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"index {value!r} is not an integer")
    return value


def _shorten(numbers: list[int], most: int = 8) -> str:
    shown = ", ".join(map(str, numbers[:most]))
    return f"[{shown}{', ...' if len(numbers) > most else ''}]"


def _float32_bytes(vector: str | list[float]) -> bytes:
    if isinstance(vector, str):
        raw = binascii.a2b_base64(vector)  # validate=True would cost 10x: a regex per vector
        if len(raw) % 4:
            raise ValueError("a base64 vector must hold whole float32 numbers")
        return raw
    return array("f", vector).tobytes()


class StreamAccumulator:
    """Collects the SSE ``data:`` lines of a streamed chat completion into one ChatAnswer.

    ``finish()`` refuses a stream that ended before ``data: [DONE]``: a stream cut short is
    retried, never written as an answer.
    """

    def __init__(self) -> None:
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._finish_reason: str | None = None
        self._usage: object = None
        self._texts = 0
        """Deltas that carried content (not null): none at all is a ``content: null``."""
        self.done = False

    def feed(self, line: bytes) -> None:
        line = line.strip()
        if not line.startswith(b"data:"):
            return  # blank separators, comments (": keep-alive"), event: lines
        data = line[5:].strip()
        if data == b"[DONE]":
            self.done = True
            return
        try:
            self._take(orjson.loads(data))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError):
            raise RetryableError("the stream sent a chunk that is not a completion chunk") from None

    def _take(self, chunk: dict[str, Any]) -> None:
        self._usage = chunk.get("usage") or self._usage
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # only the first choice is the row's answer
            delta = choice.get("delta") or {}
            self._texts += delta.get("content") is not None
            self._content.append(_text(delta.get("content")))
            self._reasoning.append(_text(_reasoning(delta)))
            self._finish_reason = choice.get("finish_reason") or self._finish_reason

    def finish(self) -> ChatAnswer:
        if not self.done:
            raise RetryableError("the stream was cut short before [DONE]")
        if not self._texts and self._finish_reason != "length":
            raise RetryableError(NO_CONTENT)
        content, reasoning = split_think("".join(self._content), "".join(self._reasoning))
        return ChatAnswer(content, reasoning, self._finish_reason, *_usage(self._usage))
