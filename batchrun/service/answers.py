"""Service answers become typed results: chat content with Qwen3's ``<think>`` block split off,
embedding vectors in input order, and SSE streams accumulated into one answer.
"""

from __future__ import annotations

import binascii
import re
from array import array
from dataclasses import dataclass
from typing import Any

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
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    assert isinstance(usage, dict)
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return RawAnswer(
        raw,
        request_id,
        prompt if isinstance(prompt, int) else None,
        completion if isinstance(completion, int) else None,
    )


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
    """A ``chat.completion`` object as a ChatAnswer; a malformed one is retried."""
    try:
        choice = body["choices"][0]
        message = choice["message"]
        content = _text(message.get("content"))
        reasoning = _text(_reasoning(message)) or None
        usage = body.get("usage") or {}
        answer, thought = split_think(content, reasoning)
        return ChatAnswer(
            answer,
            thought,
            choice.get("finish_reason"),
            _count(usage.get("prompt_tokens")),
            _count(usage.get("completion_tokens")),
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise RetryableError("the service answered without a usable choices[0].message") from None


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
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def embedding_answer(body: dict[str, Any], expected: int) -> EmbeddingAnswer:
    """An embeddings ``list`` object as vectors in input order (by each item's ``index``).

    A vector may come as base64 of float32 (``encoding_format: "base64"``, what we ask for)
    or as a list of numbers (a server that ignores the format).
    """
    try:
        data = sorted(body["data"], key=lambda item: item["index"])
        vectors = [_float32_bytes(item["embedding"]) for item in data]
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise RetryableError("the service answered without data[].embedding") from None
    if len(vectors) != expected:
        raise RetryableError(f"the service returned {len(vectors)} vectors for {expected} inputs")
    usage = body.get("usage") or {}
    return EmbeddingAnswer(vectors, usage.get("prompt_tokens"))


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
        self._usage: dict[str, Any] = {}
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
            self._content.append(_text(delta.get("content")))
            self._reasoning.append(_text(_reasoning(delta)))
            self._finish_reason = choice.get("finish_reason") or self._finish_reason

    def finish(self) -> ChatAnswer:
        if not self.done:
            raise RetryableError("the stream was cut short before [DONE]")
        content, reasoning = split_think("".join(self._content), "".join(self._reasoning))
        return ChatAnswer(
            content,
            reasoning,
            self._finish_reason,
            self._usage.get("prompt_tokens"),
            self._usage.get("completion_tokens"),
        )
