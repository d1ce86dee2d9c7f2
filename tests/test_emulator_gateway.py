"""The emulator behind a gateway: fixed wall-clock windows, and vLLM's and LiteLLM's shapes."""

from __future__ import annotations

from typing import Any, cast

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from batchrun.emulator import EmulatorConfig, make_app
from batchrun.emulator.config import GatewayName
from batchrun.emulator.limits import FixedWindow, SlidingWindow, window_for
from batchrun.service.answers import chat_answer
from tests.support import AUTH, CODER, EMBEDDER, TEXT, THINKER, FakeClock

ANSWER = (
    "Квантовая запутанность связывает состояния частиц. "
    "Запутанность частиц сохраняется на любом расстоянии между частицами."
)
MINUTE = 60.0
SIX_PER_MINUTE = 0.05
"""``rps_scale`` that makes a 2 RPS chat model admit round(2 * 0.05 * 60) = 6 per minute."""
LIFTED = 1e9
Client = TestClient[Any, Any]


async def make_client(
    aiohttp_client: AiohttpClient,
    gateway: GatewayName = "none",
    *,
    rps_scale: float = LIFTED,
    window_s: float = 1.0,
    wall: FakeClock | None = None,
    clock: FakeClock | None = None,
) -> Client:
    config = EmulatorConfig(rps_scale=rps_scale, window_s=window_s, gateway=gateway)
    app = make_app(config, clock=clock or FakeClock(500.0), wall=wall or FakeClock(6000.0))
    return await aiohttp_client(app, headers=AUTH)


def chat_body(model: str = THINKER, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": TEXT}], **extra}


async def post_chat(client: Client, **extra: Any) -> aiohttp.ClientResponse:
    return await client.post("/v1/chat/completions", json=chat_body(CODER, **extra))


async def chat(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status == 200, await response.text()
    result: dict[str, Any] = await response.json()
    return result


async def stream_chunks(client: Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON chunks of a stream; asserts it ends with ``[DONE]``."""
    response = await client.post("/v1/chat/completions", json={**body, "stream": True})
    assert response.status == 200, await response.text()
    events = [e.removeprefix("data: ") for e in (await response.text()).split("\n\n") if e]
    assert events[-1] == "[DONE]"
    return [orjson.loads(event) for event in events[:-1]]


def joined(chunks: list[dict[str, Any]], field: str) -> str:
    return "".join(c["choices"][0]["delta"].get(field, "") for c in chunks if c["choices"])


async def model_stats(client: Client, model: str = CODER) -> dict[str, Any]:
    stats: dict[str, Any] = (await (await client.get("/stats")).json())["models"][model]
    return stats


# --- fixed windows --------------------------------------------------------------------------


async def test_a_minute_window_admits_its_count_then_429s_until_the_boundary(
    aiohttp_client: AiohttpClient,
) -> None:
    wall, clock = FakeClock(6015.0), FakeClock(500.0)  # 15 s into the window [6000, 6060)
    client = await make_client(
        aiohttp_client, rps_scale=SIX_PER_MINUTE, window_s=MINUTE, wall=wall, clock=clock
    )
    statuses = []
    for _ in range(6):
        statuses.append((await post_chat(client)).status)
        clock.now += 1.0
    assert statuses == [200] * 6
    refused = await post_chat(client)
    assert refused.status == 429
    assert (refused.headers["Retry-After"], refused.headers["retry-after-ms"]) == ("45", "45000")
    assert "6 requests per 60 s" in (await refused.json())["error"]["message"]
    wall.now = 6059.5
    last_refused = await post_chat(client)
    assert last_refused.status == 429 and last_refused.headers["retry-after-ms"] == "500"
    wall.now = 6060.0
    assert (await post_chat(client)).status == 200
    seen = await model_stats(client)
    assert (seen["accepted"], seen["throttled"], seen["max_in_window"]) == (7, 2, 6)
    assert (seen["limit"], seen["period_s"]) == (6, 60.0)
    assert (seen["first_admitted_at"], seen["last_admitted_at"]) == (500.0, 506.0)


async def test_a_minute_window_is_aligned_to_the_wall_clock_not_to_the_first_request(
    aiohttp_client: AiohttpClient,
) -> None:
    wall = FakeClock(6059.0)  # one second before a boundary
    client = await make_client(aiohttp_client, rps_scale=SIX_PER_MINUTE, window_s=MINUTE, wall=wall)
    before = [(await post_chat(client)).status for _ in range(7)]
    wall.now = 6060.5  # 1.5 s later, but a new calendar window
    after = [(await post_chat(client)).status for _ in range(7)]
    assert before == after == [200] * 6 + [429]
    assert (await model_stats(client))["max_in_window"] == 6


async def test_a_minute_window_admits_rps_times_sixty_per_model(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await make_client(aiohttp_client, rps_scale=1.0, window_s=MINUTE)
    stats = (await (await client.get("/stats")).json())["models"]
    assert {name: seen["limit"] for name, seen in stats.items()} == {
        THINKER: 120,
        CODER: 120,
        EMBEDDER: 420,
    }
    assert {seen["period_s"] for seen in stats.values()} == {60.0}


def test_fixed_window_counts_down_keeps_its_peak_and_resets() -> None:
    wall, clock = FakeClock(120.0), FakeClock(7.0)
    window = FixedWindow(3, MINUTE, wall, clock)
    assert window.remaining() == 3
    assert [window.admit() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert window.remaining() == 0
    wall.now = 150.0
    assert window.admit() == pytest.approx(30.0)
    wall.now = 180.0
    assert window.remaining() == 3 and window.admit() == 0.0
    assert (window.peak, window.first, window.last) == (3, 7.0, 7.0)
    window.reset()
    assert (window.peak, window.first, window.last, window.remaining()) == (0, None, None, 3)


def test_sliding_window_remaining_frees_up_as_admissions_expire() -> None:
    clock = FakeClock(10.0)
    window = SlidingWindow(2, 1.0, clock)
    window.admit()
    clock.now += 0.5
    window.admit()
    assert window.remaining() == 0
    clock.now += 0.5
    assert window.remaining() == 1


@pytest.mark.parametrize(
    ("rps", "window_s", "kind", "capacity"),
    [
        (2.0, 1.0, SlidingWindow, 2),
        (2.0, 60.0, FixedWindow, 120),
        (7.0, 60.0, FixedWindow, 420),
        (0.004, 60.0, FixedWindow, 1),  # 0.24 rounds to 0: still one per window
        (2e12, 60.0, FixedWindow, 10**9),
    ],
)
def test_window_for_picks_the_window_and_its_capacity(
    rps: float, window_s: float, kind: type, capacity: int
) -> None:
    window = window_for(rps, window_s=window_s)
    assert isinstance(window, kind) and window.capacity == capacity
    assert window.period == (window_s if kind is FixedWindow else 1.0)


def test_config_rejects_a_bad_window_or_gateway() -> None:
    with pytest.raises(ValueError, match="window_s"):
        EmulatorConfig(window_s=0)
    with pytest.raises(ValueError, match="gateway must be one of none, vllm, litellm"):
        EmulatorConfig(gateway=cast(Any, "nginx"))


# --- LiteLLM's limits and errors --------------------------------------------------------------


async def test_litellm_429_has_its_retry_header_and_error_body(
    aiohttp_client: AiohttpClient,
) -> None:
    wall = FakeClock(6015.0)
    client = await make_client(
        aiohttp_client, "litellm", rps_scale=SIX_PER_MINUTE, window_s=MINUTE, wall=wall
    )
    assert [(await post_chat(client)).status for _ in range(6)] == [200] * 6
    refused = await post_chat(client)
    assert refused.status == 429
    assert refused.headers["llm_provider-retry-after"] == "60"  # the window, not the 45 s left
    assert "Retry-After" not in refused.headers and "retry-after-ms" not in refused.headers
    error = (await refused.json())["error"]
    assert (error["type"], error["param"], error["code"]) == ("None", "None", "429")
    message = error["message"]
    assert message.startswith("litellm.RateLimitError: ")
    assert "No deployments available for selected model" in message
    assert "rpm limit" in message and f"model={CODER}" in message
    assert (await model_stats(client))["throttled"] == 1


async def test_litellm_200s_carry_the_quota_counting_down_per_window(
    aiohttp_client: AiohttpClient,
) -> None:
    wall = FakeClock(6000.0)
    client = await make_client(
        aiohttp_client, "litellm", rps_scale=SIX_PER_MINUTE, window_s=MINUTE, wall=wall
    )
    plain = [await post_chat(client) for _ in range(2)]
    streamed = await post_chat(client, stream=True)
    await streamed.read()
    answers = [*plain, streamed]
    assert {r.headers["x-ratelimit-limit-requests"] for r in answers} == {"6"}
    assert [r.headers["x-ratelimit-remaining-requests"] for r in answers] == ["5", "4", "3"]
    assert streamed.headers["Content-Type"].startswith("text/event-stream")
    wall.now = 6060.0
    fresh = await post_chat(client)
    assert fresh.headers["x-ratelimit-remaining-requests"] == "5"
    vectors = await client.post("/v1/embeddings", json={"model": EMBEDDER, "input": "x"})
    limit = (await model_stats(client, EMBEDDER))["limit"]
    assert vectors.status == 200 and vectors.headers["x-ratelimit-limit-requests"] == str(limit)
    assert vectors.headers["x-ratelimit-remaining-requests"] == str(limit - 1)


@pytest.mark.parametrize("gateway", ["none", "vllm"])
async def test_only_litellm_sends_quota_headers(
    aiohttp_client: AiohttpClient, gateway: GatewayName
) -> None:
    client = await make_client(aiohttp_client, gateway, rps_scale=SIX_PER_MINUTE, window_s=MINUTE)
    response = await post_chat(client)
    assert response.status == 200
    assert not [name for name in response.headers if name.lower().startswith("x-ratelimit")]


async def test_unknown_model_is_litellms_400(aiohttp_client: AiohttpClient) -> None:
    client = await make_client(aiohttp_client, "litellm")
    response = await client.post("/v1/chat/completions", json=chat_body("gpt-5"))
    assert response.status == 400
    assert await response.json() == {
        "error": {
            "message": "Invalid model name passed in model=gpt-5. "
            "Call `/v1/models` to view available models for your key.",
            "type": "None",
            "param": "None",
            "code": "400",
        }
    }
    stats = await (await client.get("/stats")).json()
    assert stats["unknown_model"] == 1


@pytest.mark.parametrize("gateway", ["none", "vllm"])
async def test_unknown_model_is_a_404_without_litellm(
    aiohttp_client: AiohttpClient, gateway: GatewayName
) -> None:
    client = await make_client(aiohttp_client, gateway)
    response = await client.post("/v1/embeddings", json={"model": "gpt-5", "input": "x"})
    assert response.status == 404
    error = (await response.json())["error"]
    assert error["code"] == "model_not_found" and "param" not in error


# --- vLLM's answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gateway", "field"), [("vllm", "reasoning"), ("litellm", "reasoning_content")]
)
async def test_reasoning_comes_in_its_own_field_behind_vllm(
    aiohttp_client: AiohttpClient, gateway: GatewayName, field: str
) -> None:
    client = await make_client(aiohttp_client, gateway)
    message = (await chat(client, chat_body()))["choices"][0]["message"]
    assert message["content"] == ANSWER
    assert message[field].startswith("The user wants a short summary")
    assert "<think>" not in message[field] and "</think>" not in message[field]
    chunks = await stream_chunks(client, chat_body())
    assert joined(chunks, field) == message[field]
    assert joined(chunks, "content") == ANSWER
    other = {"reasoning", "reasoning_content"} - {field}
    assert not [c for c in chunks for name in other if name in c["choices"][0]["delta"]]


async def test_reasoning_stays_inline_without_a_gateway(aiohttp_client: AiohttpClient) -> None:
    client = await make_client(aiohttp_client)
    message = (await chat(client, chat_body()))["choices"][0]["message"]
    assert message["content"].startswith("<think>\n") and message["content"].endswith(ANSWER)
    assert set(message) == {"role", "content"}


async def test_no_think_gives_a_null_reasoning_in_vllm_and_none_in_litellm(
    aiohttp_client: AiohttpClient,
) -> None:
    messages = [{"role": "system", "content": "/no_think"}, {"role": "user", "content": TEXT}]
    body = {"model": THINKER, "messages": messages}
    vllm = await make_client(aiohttp_client, "vllm")
    litellm = await make_client(aiohttp_client, "litellm")
    from_vllm = (await chat(vllm, body))["choices"][0]["message"]
    from_litellm = (await chat(litellm, body))["choices"][0]["message"]
    assert from_vllm == {"role": "assistant", "content": ANSWER, "reasoning": None}
    assert from_litellm == {"role": "assistant", "content": ANSWER}
    chunks = await stream_chunks(vllm, body)
    assert joined(chunks, "content") == ANSWER and joined(chunks, "reasoning") == ""


async def test_a_think_block_cut_by_max_tokens_is_all_reasoning(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await make_client(aiohttp_client, "vllm")
    answer = await chat(client, chat_body(max_tokens=4))
    message, choice = answer["choices"][0]["message"], answer["choices"][0]
    assert message == {"role": "assistant", "content": None, "reasoning": "The user wants"}
    assert choice["finish_reason"] == "length" and answer["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("gateway", ["none", "vllm", "litellm"])
async def test_the_runner_reads_the_same_answer_from_every_gateway(
    aiohttp_client: AiohttpClient, gateway: GatewayName
) -> None:
    client = await make_client(aiohttp_client, gateway)
    answer = chat_answer(await chat(client, chat_body()))
    assert answer.content == ANSWER
    assert answer.reasoning is not None and answer.reasoning.startswith("The user wants")


@pytest.mark.parametrize("gateway", ["vllm", "litellm"])
async def test_stream_usage_comes_alone_and_only_when_asked(
    aiohttp_client: AiohttpClient, gateway: GatewayName
) -> None:
    client = await make_client(aiohttp_client, gateway)
    usage = (await chat(client, chat_body()))["usage"]
    unasked: list[dict[str, Any]] = [{}, {"stream_options": {}}]
    unasked.append({"stream_options": {"include_usage": False}})
    for extra in unasked:
        chunks = await stream_chunks(client, chat_body(**extra))
        assert not [c for c in chunks if "usage" in c]
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    asked = await stream_chunks(client, chat_body(stream_options={"include_usage": True}))
    assert asked[-1]["choices"] == [] and asked[-1]["usage"] == usage
    assert asked[-2]["choices"][0]["finish_reason"] == "stop" and "usage" not in asked[-2]
    assert [c for c in asked if "usage" in c] == [asked[-1]]


async def test_stream_usage_always_comes_without_a_gateway(aiohttp_client: AiohttpClient) -> None:
    client = await make_client(aiohttp_client)
    usage = (await chat(client, chat_body()))["usage"]
    unasked: list[dict[str, Any]] = [{}, {"stream_options": {"include_usage": False}}]
    for extra in unasked:
        chunks = await stream_chunks(client, chat_body(**extra))
        assert chunks[-1]["usage"] == usage and chunks[-1]["choices"][0]["finish_reason"] == "stop"


BAD_PARAMS = [
    ({"temperature": "hot"}, "'temperature' must be a number"),
    ({"temperature": True}, "'temperature' must be a number"),
    ({"temperature": -0.5}, "'temperature' must be non-negative"),
    ({"top_p": "most"}, "'top_p' must be a number"),
    ({"top_p": 1.5}, "'top_p' must be in (0, 1]"),
    ({"stream": True, "stream_options": "usage"}, "'stream_options' must be an object"),
]


@pytest.mark.parametrize("gateway", ["vllm", "litellm"])
@pytest.mark.parametrize(("extra", "fragment"), BAD_PARAMS)
async def test_mistyped_sampling_params_are_a_400_behind_vllm(
    aiohttp_client: AiohttpClient, gateway: GatewayName, extra: dict[str, Any], fragment: str
) -> None:
    client = await make_client(aiohttp_client, gateway)
    response = await post_chat(client, **extra)
    assert response.status == 400
    assert fragment in (await response.json())["error"]["message"]
    assert (await model_stats(client))["rejected"] == 1


@pytest.mark.parametrize("gateway", ["vllm", "litellm"])
async def test_numeric_sampling_params_pass_behind_vllm(
    aiohttp_client: AiohttpClient, gateway: GatewayName
) -> None:
    client = await make_client(aiohttp_client, gateway)
    response = await post_chat(client, temperature=0, top_p=0.9, stream_options=None)
    assert response.status == 200


async def test_sampling_params_are_not_checked_without_a_gateway(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await make_client(aiohttp_client)
    response = await post_chat(client, temperature="hot", stream_options="usage")
    assert response.status == 200
