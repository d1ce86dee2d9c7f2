"""Api: HTTP statuses and aiohttp's failures become batchrun's errors; the key never leaks."""

from __future__ import annotations

from array import array
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from aioresponses import aioresponses

from batchrun.errors import FatalError, RetryableError, RowError
from batchrun.job.spec import EndpointSpec, RunSpec
from batchrun.service.client import Api
from batchrun.service.ratelimits import Quota

BASE = "http://127.0.0.1:8000/v1"
CHAT = f"{BASE}/chat/completions"
EMBED = f"{BASE}/embeddings"
KEY = "sk-test-SECRET-123"
MODEL = "qwen3-32b-awq"
MESSAGES = {"messages": [{"role": "user", "content": "Summarise: it was sunny."}]}


def make_api(base_url: str, key_env: str = "SCIBOX_API_KEY") -> Api:
    return Api.from_endpoint(EndpointSpec(api_key_env=key_env), RunSpec(), base_url, KEY)


@pytest.fixture
def server() -> Iterator[aioresponses]:
    with aioresponses() as mocked:
        yield mocked


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with make_api(BASE + "/", key_env="MY_TOKEN") as client:
        yield client


def error_body(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error"}}


def sent(server: aioresponses) -> list[dict[str, Any]]:
    """The JSON bodies the client sent, in order."""
    assert server.requests is not None
    return [orjson.loads(c.kwargs["data"]) for calls in server.requests.values() for c in calls]


def chat_body(content: str) -> dict[str, Any]:
    return {
        "choices": [{"message": {"content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4},
    }


async def test_client_parses_a_chat_answer_and_splits_off_thinking(
    server: aioresponses, api: Api
) -> None:
    server.post(CHAT, payload=chat_body("<think>Two sentences.</think>\n\nIt was sunny."))

    answer = await api.chat(MODEL, {**MESSAGES, "temperature": 0})

    assert answer.content == "It was sunny."
    assert answer.reasoning == "Two sentences."
    assert (answer.finish_reason, answer.prompt_tokens, answer.completion_tokens) == (
        "stop",
        10,
        4,
    )


async def test_client_sends_the_body_with_the_model(server: aioresponses, api: Api) -> None:
    server.post(CHAT, payload=chat_body("ok"))

    await api.chat(MODEL, MESSAGES)

    assert sent(server) == [{**MESSAGES, "model": MODEL}]


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [({"Retry-After": "7"}, 7.0), ({"retry-after-ms": "1500"}, 1.5), ({}, None)],
    ids=["seconds", "milliseconds", "none"],
)
async def test_client_turns_429_into_retryable_with_retry_after(
    server: aioresponses, api: Api, headers: dict[str, str], seconds: float | None
) -> None:
    server.post(CHAT, status=429, payload=error_body("Rate limit exceeded"), headers=headers)

    with pytest.raises(RetryableError) as caught:
        await api.chat(MODEL, MESSAGES)

    assert caught.value.status == 429
    assert caught.value.retry_after == seconds
    assert caught.value.window_reset is None  # a plain 429: the pacer slows down
    assert "Rate limit exceeded" in str(caught.value)


async def test_client_reads_a_gateways_window_429(server: aioresponses, api: Api) -> None:
    body = error_body("litellm.RateLimitError: No deployments available for selected model")
    server.post(CHAT, status=429, payload=body, headers={"llm_provider-retry-after": "60"})

    with pytest.raises(RetryableError) as caught:
        await api.chat(MODEL, MESSAGES)

    assert (caught.value.window_reset, caught.value.retry_after) == (60.0, None)


async def test_client_reads_the_quota_an_answer_states(server: aioresponses, api: Api) -> None:
    headers = {"x-ratelimit-limit-requests": "120", "x-ratelimit-remaining-requests": "41"}
    server.post(CHAT, payload=chat_body("Fine."), headers=headers)

    answer = await api.chat(MODEL, MESSAGES)

    assert answer.quota == Quota(limit=120, remaining=41)


async def test_client_calls_a_400_naming_an_unknown_model_fatal(
    server: aioresponses, api: Api
) -> None:
    message = "/chat/completions: Invalid model name passed in model=qwen9. Call `/v1/models`"
    server.post(CHAT, status=400, payload=error_body(message))

    with pytest.raises(FatalError, match="wrong URL or model 'qwen3-32b-awq'"):
        await api.chat(MODEL, MESSAGES)


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
async def test_client_turns_timeouts_and_server_errors_into_retryable(
    server: aioresponses, api: Api, status: int
) -> None:
    server.post(CHAT, status=status, body="upstream is having a bad day")

    with pytest.raises(RetryableError) as caught:
        await api.chat(MODEL, MESSAGES)

    assert caught.value.status == status
    assert caught.value.status != 429
    assert f"{status} from {CHAT}: upstream is having a bad day" == str(caught.value)


async def test_client_retries_503_then_succeeds(server: aioresponses, api: Api) -> None:
    server.post(CHAT, status=503, body="busy")
    server.post(CHAT, payload=chat_body("Second time lucky."))

    with pytest.raises(RetryableError):
        await api.chat(MODEL, MESSAGES)
    answer = await api.chat(MODEL, MESSAGES)

    assert answer.content == "Second time lucky."


async def test_client_turns_400_into_a_row_error_with_the_servers_message(
    server: aioresponses, api: Api
) -> None:
    message = "This model's maximum context length is 32768 tokens"
    server.post(CHAT, status=400, payload=error_body(message))

    with pytest.raises(RowError) as caught:
        await api.chat(MODEL, MESSAGES)

    assert caught.value.status == 400
    assert str(caught.value) == f"400 bad request: {message}"


@pytest.mark.parametrize(
    ("status", "advice"),
    [
        (401, "set a valid token in the environment variable MY_TOKEN"),
        (403, "ask the service's support for access or use another model"),
        (404, "check [endpoint].base_url (it ends in /v1)"),
    ],
)
async def test_client_turns_auth_and_not_found_into_fatal_with_the_fix(
    server: aioresponses, api: Api, status: int, advice: str
) -> None:
    server.post(CHAT, status=status, payload=error_body(f"Invalid token: Bearer {KEY}"))

    with pytest.raises(FatalError) as caught:
        await api.chat(MODEL, MESSAGES)

    message = str(caught.value)
    assert caught.value.status == status
    assert advice in message
    assert KEY not in message
    assert "Invalid token: Bearer <hidden>" in message
    assert KEY not in repr(caught.value)


@pytest.mark.parametrize("status", [400, 429, 500])
async def test_client_redacts_the_key_from_every_error_message(
    server: aioresponses, api: Api, status: int
) -> None:
    server.post(CHAT, status=status, body=f"echo: Authorization: Bearer {KEY}")

    with pytest.raises((RowError, RetryableError)) as caught:
        await api.chat(MODEL, MESSAGES)

    assert KEY not in str(caught.value)
    assert "<hidden>" in str(caught.value)


async def test_client_never_leaks_part_of_a_key_cut_by_the_length_limit(
    server: aioresponses, api: Api
) -> None:
    server.post(CHAT, status=401, payload=error_body("x" * 286 + f" {KEY}"))

    with pytest.raises(FatalError) as caught:
        await api.chat(MODEL, MESSAGES)

    assert KEY[:8] not in str(caught.value)


async def test_client_redacts_the_key_from_a_non_json_answer(
    server: aioresponses, api: Api
) -> None:
    server.post(CHAT, body=f"Authorization: Bearer {KEY}", content_type="text/plain")

    with pytest.raises(RetryableError) as caught:
        await api.chat(MODEL, MESSAGES)

    assert KEY not in str(caught.value)


async def test_client_turns_a_dropped_connection_into_retryable(
    server: aioresponses, api: Api
) -> None:
    server.post(CHAT, exception=aiohttp.ClientConnectionError())

    with pytest.raises(RetryableError, match=r"connection to .* dropped"):
        await api.chat(MODEL, MESSAGES)


async def test_client_turns_a_timeout_into_retryable(server: aioresponses, api: Api) -> None:
    server.post(CHAT, exception=TimeoutError())  # the same class as asyncio.TimeoutError

    with pytest.raises(RetryableError) as caught:
        await api.chat(MODEL, MESSAGES)

    assert str(caught.value) == f"no answer from {CHAT} in time"
    assert caught.value.status is None


async def test_client_turns_a_non_json_answer_into_retryable(
    server: aioresponses, api: Api
) -> None:
    server.post(CHAT, body="<html>502 Bad Gateway</html>", content_type="text/html")

    with pytest.raises(RetryableError, match="answered with non-JSON"):
        await api.chat(MODEL, MESSAGES)


async def test_client_turns_a_json_answer_that_is_not_an_object_into_retryable(
    server: aioresponses, api: Api
) -> None:
    server.post(CHAT, body="[1, 2]")

    with pytest.raises(RetryableError, match="not an object"):
        await api.chat(MODEL, MESSAGES)


def sse(*deltas: str, done: bool = True) -> bytes:
    lines = [b": keep-alive\n\n"]
    for content in deltas:
        chunk = {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}
        lines.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    if done:
        lines.append(b"data: [DONE]\n\n")
    return b"".join(lines)


async def test_client_streams_a_chat_answer_and_joins_its_deltas(
    server: aioresponses, api: Api
) -> None:
    server.post(
        CHAT,
        body=sse("<think></think>", "It was ", "sunny."),
        content_type="text/event-stream",
    )

    answer = await api.chat(MODEL, MESSAGES, stream=True)

    assert (answer.content, answer.reasoning) == ("It was sunny.", None)
    usage = {"include_usage": True}  # vLLM, LiteLLM and OpenAI send usage only when asked
    assert sent(server) == [{**MESSAGES, "model": MODEL, "stream": True, "stream_options": usage}]


async def test_client_refuses_a_stream_cut_before_done(server: aioresponses, api: Api) -> None:
    server.post(CHAT, body=sse("It was ", done=False), content_type="text/event-stream")

    with pytest.raises(RetryableError, match="cut short"):
        await api.chat(MODEL, MESSAGES, stream=True)


async def test_client_returns_embeddings_in_input_order(server: aioresponses, api: Api) -> None:
    server.post(
        EMBED,
        payload={
            "data": [
                {"index": 1, "embedding": [0.0, 1.0]},
                {"index": 0, "embedding": [1.0, 0.0]},
            ],
            "usage": {"prompt_tokens": 6},
        },
    )

    answer = await api.embed("bge-m3", {"input": ["first", "second"]})

    assert [list(array("f", v)) for v in answer.vectors] == [[1.0, 0.0], [0.0, 1.0]]
    assert answer.prompt_tokens == 6


async def test_client_refuses_embeddings_with_a_missing_vector(
    server: aioresponses, api: Api
) -> None:
    server.post(EMBED, payload={"data": [{"index": 0, "embedding": [1.0]}]})

    with pytest.raises(RetryableError, match=r"2 inputs with indexes \[0\]"):
        await api.embed("bge-m3", {"input": ["first", "second"]})


async def test_client_lists_the_served_models_sorted(server: aioresponses, api: Api) -> None:
    server.get(
        f"{BASE}/models",
        payload={"object": "list", "data": [{"id": "qwen3-32b-awq"}, {"id": "bge-m3"}]},
    )

    assert await api.list_models() == ["bge-m3", "qwen3-32b-awq"]


async def test_client_outside_its_context_says_how_to_use_it() -> None:
    with pytest.raises(RuntimeError, match="async with Api"):
        await make_api(BASE).list_models()


def test_client_repr_hides_the_key() -> None:
    text = repr(make_api(BASE + "/"))

    assert KEY not in text
    assert text == f"Api({BASE!r}, key=<hidden>)"
