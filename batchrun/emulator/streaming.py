"""Server-sent events for ``"stream": true``: the answer as OpenAI chat.completion.chunk lines.

The first chunk carries the role, then one chunk per word (with its following whitespace, so
the deltas concatenate to exactly the plain answer), then a chunk with ``finish_reason`` and
``usage``, then ``data: [DONE]``. ``latency_s`` is spread evenly over the chunks. A cut stream
stops half-way and closes the connection without ``[DONE]``; a stalled one sends its first
chunk and goes silent until the client gives up or the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

import orjson
from aiohttp import web

from batchrun.emulator.faults import Fault
from batchrun.emulator.summaries import Summary

STALL_S = 3600.0
"""How long a stalled stream stays silent if neither the client nor the server gives up."""

_PIECE = re.compile(r"\s*\S+\s*|\s+")
_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
DONE = b"data: [DONE]\n\n"


def usage_json(answer: Summary) -> dict[str, int]:
    """The ``usage`` object of a chat answer."""
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


def event_lines(head: dict[str, object], answer: Summary) -> list[bytes]:
    """Every SSE line of a stream, ``[DONE]`` included; ``head`` holds id, created, model."""
    head = {**head, "object": "chat.completion.chunk"}

    def line(delta: dict[str, str], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

    lines = [line({"role": "assistant", "content": ""})]
    lines += [line({"content": piece}) for piece in _PIECE.findall(answer.content)]
    choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": answer.finish_reason}
    last = {**head, "choices": [choice], "usage": usage_json(answer)}
    lines += [b"data: " + orjson.dumps(last) + b"\n\n", DONE]
    return lines


async def send_events(
    request: web.Request,
    lines: list[bytes],
    fault: Fault | None,
    latency_s: float,
    stopping: asyncio.Event,
) -> web.StreamResponse:
    """Stream ``lines`` to the client, cut or stalled as ``fault`` says."""
    response = web.StreamResponse(headers=_HEADERS)
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
