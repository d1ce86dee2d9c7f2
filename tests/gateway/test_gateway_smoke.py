"""Smoke tests through a real LiteLLM Proxy with plain aiohttp: what a client sees of it."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from tests.gateway.litellm_proxy import SCIBOX_RPM, Gateway

CHAT_MODEL = "qwen3-coder-30b-a3b-instruct-fp8"


def _headers(gateway: Gateway) -> dict[str, str]:
    return {"Authorization": f"Bearer {gateway.master_key}"}


def _chat(**extra: Any) -> dict[str, Any]:
    return {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 8,
        **extra,
    }


async def _stream_chunks(gateway: Gateway, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``data:`` chunks of a streamed answer, up to ``[DONE]`` (which must come)."""
    chunks: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gateway.base_url}/chat/completions", json=body, headers=_headers(gateway)
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line.removeprefix("data:").strip()
            if data == "[DONE]":
                return chunks
            chunks.append(orjson.loads(data))
    raise AssertionError(f"the stream ended without [DONE] after {len(chunks)} chunks")


async def test_chat_answers_with_rate_limit_headers(gateway: Gateway) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gateway.base_url}/chat/completions", json=_chat(), headers=_headers(gateway)
        ) as response,
    ):
        assert response.status == 200
        body = await response.json()
        headers = response.headers
    assert body["choices"][0]["message"]["content"]
    assert body["usage"]["total_tokens"] > 0
    limit = SCIBOX_RPM[CHAT_MODEL]
    assert headers["x-ratelimit-limit-requests"] == str(limit)
    assert 0 <= int(headers["x-ratelimit-remaining-requests"]) < limit
    assert headers["x-litellm-model-group"] == CHAT_MODEL
    assert headers["llm_provider-server"].startswith("Python/")  # the emulator's, renamed


async def test_unknown_model_is_a_400(gateway: Gateway) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gateway.base_url}/chat/completions",
            json=_chat(model="no-such-model"),
            headers=_headers(gateway),
        ) as response,
    ):
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "400"
    assert "Invalid model name passed in model=no-such-model" in error["message"]


async def test_stream_usage_only_when_asked(gateway: Gateway) -> None:
    plain = await _stream_chunks(gateway, _chat(stream=True))
    asked = await _stream_chunks(
        gateway, _chat(stream=True, stream_options={"include_usage": True})
    )
    assert plain and asked
    assert not [chunk for chunk in plain if chunk.get("usage")]
    with_usage = [chunk for chunk in asked if chunk.get("usage")]
    assert len(with_usage) == 1
    assert with_usage[0] is asked[-1]
    assert with_usage[0]["usage"]["total_tokens"] > 0
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in plain if c["choices"])
    assert text
