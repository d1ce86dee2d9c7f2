"""Server-sent events for ``"stream": true``: the answer as OpenAI chat.completion.chunk lines.

The first chunk carries the role, then one chunk per word (with its following whitespace, so
the deltas concatenate to exactly the plain answer), then a chunk with ``finish_reason`` and
``usage``, then ``data: [DONE]``; behind vLLM the reasoning streams in its own field and the
usage comes in a chunk of its own, only when asked (:func:`event_lines`). ``latency_s`` is
spread evenly over the chunks. A cut stream stops half-way and closes the connection without
``[DONE]``; a stalled one sends its first chunk and goes silent until the client gives up or
the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Literal

import orjson
from aiohttp import web

from batchrun.emulator.faults import Fault
from batchrun.emulator.summaries import Summary, parse_reasoning

STALL_S = 3600.0
"""How long a stalled stream stays silent if neither the client nor the server gives up."""

_PIECE = re.compile(r"\s*\S+\s*|\s+")
_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
DONE = b"data: [DONE]\n\n"

UsagePlace = Literal["last", "alone", "none"]
"""Where a stream's usage goes (see :func:`event_lines`)."""


def usage_json(answer: Summary) -> dict[str, int]:
    """The ``usage`` object of a chat answer."""
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


def event_lines(
    head: dict[str, object],
    answer: Summary,
    reasoning_field: str | None = None,
    usage: UsagePlace = "last",
) -> list[bytes]:
    """Every SSE line of a stream, ``[DONE]`` included; ``head`` holds id, created, model.

    With ``reasoning_field`` the ``<think>`` block is streamed as deltas of that field and the
    content deltas hold only the answer. ``usage`` says where the usage goes: on the finishing
    chunk (``"last"``), in a chunk of its own with ``choices: []`` before ``[DONE]``
    (``"alone"``, as vLLM sends it for ``stream_options.include_usage``), or nowhere.
    """
    head = {**head, "object": "chat.completion.chunk"}
    lines = [_chunk(head, {"role": "assistant", "content": ""})]
    lines += [_chunk(head, delta) for delta in _deltas(answer.content, reasoning_field)]
    inline = usage_json(answer) if usage == "last" else None
    lines.append(_chunk(head, {}, answer.finish_reason, inline))
    if usage == "alone":
        lines.append(_data({**head, "choices": [], "usage": usage_json(answer)}))
    lines.append(DONE)
    return lines


def _deltas(content: str, reasoning_field: str | None) -> list[dict[str, str]]:
    """The deltas of ``content``, one per word; the reasoning first, in its own field."""
    if reasoning_field is None:
        return [{"content": piece} for piece in _PIECE.findall(content)]
    reasoning, answer = parse_reasoning(content)
    deltas = [{reasoning_field: piece} for piece in _PIECE.findall(reasoning or "")]
    return deltas + [{"content": piece} for piece in _PIECE.findall(answer)]


def _chunk(
    head: dict[str, object],
    delta: dict[str, str],
    finish: str | None = None,
    usage: dict[str, int] | None = None,
) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    chunk: dict[str, object] = {**head, "choices": [choice]}
    if usage is not None:
        chunk["usage"] = usage
    return _data(chunk)


def _data(chunk: dict[str, object]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def send_events(
    request: web.Request,
    lines: list[bytes],
    fault: Fault | None,
    latency_s: float,
    stopping: asyncio.Event,
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """Stream ``lines`` to the client, cut or stalled as ``fault`` says; ``headers`` are
    added to the event-stream ones."""
    response = web.StreamResponse(headers={**_HEADERS, **(headers or {})})
    await response.prepare(request)
    if fault is Fault.CUT:
        lines = lines[: max(1, len(lines) // 2)]
    elif fault is Fault.STALL:
        lines = lines[:1]
    delay = latency_s / len(lines)
    for line in lines:
        if delay:
            await asyncio.sleep(delay)
        await response.write(line)
    if fault is Fault.STALL:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), STALL_S)
    if fault is not None:
        close_connection(request)
        return response
    await response.write_eof()
    return response


def close_connection(request: web.Request) -> None:
    """Close the client's connection now, whatever was sent so far."""
    if request.transport is not None:
        request.transport.close()
