"""The local SciBox emulator: routes, answers, limits, faults, and the official openai client."""

from __future__ import annotations

import array
import asyncio
import base64
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from batchrun.emulator import EmulatorConfig, make_app, running_emulator
from batchrun.emulator import counters as emulator_stats
from batchrun.emulator.faults import Fault, FaultPlan
from batchrun.emulator.limits import SlidingWindow, window_for
from batchrun.emulator.summaries import split_sentences, truncate_tokens
from batchrun.emulator.vectors import DIMENSIONS, embed, embed_base64
from batchrun.job.catalog import MODELS
from tests.support import AUTH, CODER, EMBEDDER, TEXT, THINKER, FakeClock

LIFTED = EmulatorConfig(rps_scale=1e9)


Client = TestClient[Any, Any]


async def make_client(
    aiohttp_client: AiohttpClient, config: EmulatorConfig = LIFTED, **kwargs: Any
) -> Client:
    return await aiohttp_client(make_app(config, **kwargs), headers=AUTH)


def chat_body(model: str = THINKER, text: str = TEXT, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def chat(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status == 200, await response.text()
    result: dict[str, Any] = await response.json()
    return result


async def embeddings(client: Client, inputs: Any, **extra: Any) -> dict[str, Any]:
    response = await client.post(
        "/v1/embeddings", json={"model": EMBEDDER, "input": inputs, **extra}
    )
    assert response.status == 200, await response.text()
    result: dict[str, Any] = await response.json()
    return result


# --- routes and answers ------------------------------------------------------------------


async def test_models_lists_the_three_catalog_models(aiohttp_client: AiohttpClient) -> None:
    client = await make_client(aiohttp_client)
    response = await client.get("/v1/models")
    body = await response.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == list(MODELS)
    assert all(m["object"] == "model" and m["owned_by"] == "scibox" for m in body["data"])


async def test_chat_thinking_model_reasons_then_summarises_the_text(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await make_client(aiohttp_client)
    body = await chat(client, chat_body())
    content = body["choices"][0]["message"]["content"]
    think, answer = content.split("</think>\n\n")
    assert think.startswith("<think>\n") and len(think) > len("<think>\n\n")
    assert answer == (
        "Квантовая запутанность связывает состояния частиц. "
        "Запутанность частиц сохраняется на любом расстоянии между частицами."
    )
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


async def test_chat_no_think_in_system_prompt_gives_an_empty_think_block(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await make_client(aiohttp_client)
    messages = [{"role": "system", "content": "/no_think Ты помощник"}]
    messages.append({"role": "user", "content": TEXT})
    body = await chat(client, {"model": THINKER, "messages": messages})
    content = body["choices"][0]["message"]["content"]
    assert content.startswith("<think>\n\n</think>\n\n")
    assert content.removeprefix("<think>\n\n</think>\n\n").startswith("Квантовая")


async def test_chat_coder_model_has_no_think_block(aiohttp_client: AiohttpClient) -> None:
    client = await make_client(aiohttp_client)
    body = await chat(client, chat_body(CODER))
    content = body["choices"][0]["message"]["content"]
    assert "<think>" not in content and content.startswith("Квантовая")


async def test_chat_one_sentence_instruction_gives_one_sentence(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await make_client(aiohttp_client)
    text = TEXT.replace("в двух предложениях", "в одном предложении")
    body = await chat(client, chat_body(CODER, text))
    assert len(split_sentences(body["choices"][0]["message"]["content"])) == 1


async def test_chat_max_tokens_truncates_and_reports_length(aiohttp_client: AiohttpClient) -> None:
    client = await make_client(aiohttp_client)
    body = await chat(client, chat_body(CODER, max_tokens=3))
    assert body["choices"][0]["message"]["content"] == "Квантовая запутанность связывает"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


def test_truncate_tokens_keeps_whole_text_when_it_fits() -> None:
    assert truncate_tokens("a b  c", 3) == ("a b  c", False)
    assert truncate_tokens("a b  c d", 3) == ("a b  c", True)


async def test_chat_answers_are_deterministic(aiohttp_client: AiohttpClient) -> None:
    first = await make_client(aiohttp_client)
    second = await make_client(aiohttp_client)
    one, two = await chat(first, chat_body()), await chat(second, chat_body())
    assert one["id"] == two["id"]
    assert one["choices"] == two["choices"] and one["usage"] == two["usage"]


async def read_events(response: aiohttp.ClientResponse) -> list[str]:
    raw = (await response.read()).decode()
    assert raw.endswith("\n\n")
    lines = raw.split("\n\n")[:-1]
    assert all(line.startswith("data: ") for line in lines)
    return [line.removeprefix("data: ") for line in lines]


@pytest.mark.parametrize("model", [THINKER, CODER])
async def test_chat_stream_deltas_concatenate_to_the_plain_answer(
    aiohttp_client: AiohttpClient, model: str
) -> None:
    client = await make_client(aiohttp_client)
    plain = await chat(client, chat_body(model))
    response = await client.post("/v1/chat/completions", json=chat_body(model, stream=True))
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = await read_events(response)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(event) for event in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == plain["usage"]


async def test_embeddings_are_unit_vectors_in_input_order(aiohttp_client: AiohttpClient) -> None:
    client = await make_client(aiohttp_client)
    texts = ["первый текст", "второй текст", "third text"]
    body = await embeddings(client, texts)
    assert body["object"] == "list" and body["model"] == EMBEDDER
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    for item, text in zip(body["data"], texts, strict=True):
        assert item["object"] == "embedding" and len(item["embedding"]) == DIMENSIONS
        assert math.isclose(math.hypot(*item["embedding"]), 1.0, rel_tol=1e-9)
        assert item["embedding"] == embed(text)
    assert body["usage"] == {"prompt_tokens": 6, "total_tokens": 6}


async def test_embeddings_accept_a_single_string(aiohttp_client: AiohttpClient) -> None:
    client = await make_client(aiohttp_client)
    body = await embeddings(client, "Напиши короткое стихотворение про осень")
    assert len(body["data"]) == 1 and len(body["data"][0]["embedding"]) == DIMENSIONS


def test_similar_texts_get_closer_vectors_than_unrelated_ones() -> None:
    def cosine(a: str, b: str) -> float:
        return sum(x * y for x, y in zip(embed(a), embed(b), strict=True))

    question = "Что такое квантовая запутанность?"
    related = "Квантовая запутанность — это корреляция состояний частиц"
    unrelated = "Напиши короткое стихотворение про осень"
    assert cosine(question, related) > cosine(question, unrelated) + 0.2
    assert cosine(question, question) == pytest.approx(1.0)


async def test_embeddings_in_base64_are_the_same_float32_vector(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await make_client(aiohttp_client)
    body = await embeddings(client, ["квантовая запутанность"], encoding_format="base64")
    encoded = body["data"][0]["embedding"]
    assert encoded == embed_base64("квантовая запутанность")
    decoded = array.array("f", base64.b64decode(encoded)).tolist()
    assert decoded == pytest.approx(embed("квантовая запутанность"), abs=1e-7)


def test_embedding_of_punctuation_only_is_still_a_unit_vector() -> None:
    assert math.isclose(math.hypot(*embed("?!")), 1.0)


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"}, {"X": "y"}]
)
async def test_missing_or_malformed_bearer_gives_401(
    aiohttp_client: AiohttpClient, headers: dict[str, str]
) -> None:
    client = await aiohttp_client(make_app(LIFTED))
    response = await client.get("/v1/models", headers=headers)
    assert response.status == 401
    assert (await response.json())["error"]["type"] == "authentication_error"


async def test_wrong_key_gives_401_and_never_echoes_a_token(
    aiohttp_client: AiohttpClient,
) -> None:
    config = EmulatorConfig(rps_scale=1e9, api_key="s3cret-key")
    assert "s3cret-key" not in repr(config)
    client = await aiohttp_client(make_app(config))
    response = await client.post(
        "/v1/chat/completions",
        json=chat_body(),
        headers={"Authorization": "Bearer wrong-token-123"},
    )
    assert response.status == 401
    text = await response.text()
    assert "wrong-token-123" not in text and "s3cret-key" not in text
    good = await client.get("/v1/models", headers={"Authorization": "Bearer s3cret-key"})
    assert good.status == 200


async def test_unknown_model_gives_404(aiohttp_client: AiohttpClient) -> None:
    client = await make_client(aiohttp_client)
    response = await client.post("/v1/chat/completions", json=chat_body("gpt-5"))
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "model_not_found"


async def test_wrong_method_or_path_under_v1_answers_openai_style_json(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await make_client(aiohttp_client)
    wrong_method = await client.get("/v1/chat/completions")
    assert wrong_method.status == 405
    assert (await wrong_method.json())["error"]["code"] == "method_not_allowed"
    wrong_path = await client.post("/v1/completions", json={})
    assert wrong_path.status == 404
    assert (await wrong_path.json())["error"]["code"] == "not_found"


BAD_CHATS = [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"model": "qwen3-32b-awq"}', "'messages'"),
    (b'{"model": "qwen3-32b-awq", "messages": []}', "'messages'"),
    (b'{"model": "qwen3-32b-awq", "messages": [{"role": "user"}]}', "messages[0].content"),
    (b'{"model": "qwen3-32b-awq", "messages": [{"role": 1, "content": "x"}]}', "messages[0].role"),
    (b'{"model": "bge-m3", "messages": [{"role": "user", "content": "x"}]}', "/v1/embeddings"),
    (
        b'{"model": "qwen3-32b-awq", "messages": [{"role": "user", "content": "x"}],'
        b' "max_tokens": 0}',
        "max_tokens",
    ),
]


@pytest.mark.parametrize(("raw", "fragment"), BAD_CHATS)
async def test_bad_chat_payload_gives_400_saying_what_is_wrong(
    aiohttp_client: AiohttpClient, raw: bytes, fragment: str
) -> None:
    client = await make_client(aiohttp_client)
    response = await client.post("/v1/chat/completions", data=raw)
    assert response.status == 400
    error = (await response.json())["error"]
    assert fragment in error["message"] and error["type"] == "invalid_request_error"


BAD_INPUTS = [
    (["ok", ""], "input[1] is an empty string"),
    ("", "input[0] is an empty string"),
    ([], "non-empty"),
    (["ok", 3], "input[1] must be a string"),
    (None, "non-empty"),
    (["x" * 32_001], "input[0] has 32001 characters"),
]


@pytest.mark.parametrize(("inputs", "fragment"), BAD_INPUTS)
async def test_bad_embedding_input_rejects_the_whole_request(
    aiohttp_client: AiohttpClient, inputs: Any, fragment: str
) -> None:
    client = await make_client(aiohttp_client)
    response = await client.post("/v1/embeddings", json={"model": EMBEDDER, "input": inputs})
    assert response.status == 400
    assert fragment in (await response.json())["error"]["message"]


async def test_chat_model_on_embeddings_gives_400(aiohttp_client: AiohttpClient) -> None:
    client = await make_client(aiohttp_client)
    response = await client.post("/v1/embeddings", json={"model": CODER, "input": "x"})
    assert response.status == 400
    assert "/v1/chat/completions" in (await response.json())["error"]["message"]


async def test_input_of_exactly_the_limit_is_accepted(aiohttp_client: AiohttpClient) -> None:
    client = await make_client(aiohttp_client)
    body = await embeddings(client, ["x" * 32_000])
    assert len(body["data"]) == 1


# --- rate limits and stats ------------------------------------------------------------------


def test_sliding_window_admits_capacity_per_second_without_sleeping() -> None:
    clock = FakeClock()
    window = SlidingWindow(2, 1.0, clock)
    assert [window.admit() for _ in range(3)][:2] == [0.0, 0.0]
    clock.now += 0.4
    assert window.admit() == pytest.approx(0.6)
    clock.now += 0.6  # the first two leave the window exactly 1.0 s after they entered
    assert window.admit() == 0.0 and window.admit() == 0.0
    assert window.admit() > 0 and window.peak == 2


@pytest.mark.parametrize(
    ("rps", "capacity", "period"), [(2.0, 2, 1.0), (7.0, 7, 1.0), (2.5, 2, 1.0), (0.5, 1, 2.0)]
)
def test_window_for_a_rate(rps: float, capacity: int, period: float) -> None:
    window = window_for(rps)
    assert (window.capacity, window.period) == (capacity, period)


def test_window_for_a_huge_rate_is_effectively_unlimited() -> None:
    assert window_for(2e12).capacity >= 10**9
    assert window_for(7 * 0.1 / 0.1).capacity == 7


async def test_over_the_limit_gives_429_with_retry_after_and_stats_count_it(
    aiohttp_client: AiohttpClient,
) -> None:
    clock = FakeClock()
    client = await make_client(aiohttp_client, EmulatorConfig(), clock=clock)
    statuses = [
        (await client.post("/v1/embeddings", json={"model": EMBEDDER, "input": "x"})).status
        for _ in range(7)
    ]
    assert statuses == [200] * 7
    clock.now += 0.25
    throttled = await client.post("/v1/embeddings", json={"model": EMBEDDER, "input": "x"})
    assert throttled.status == 429
    assert throttled.headers["Retry-After"] == "1"
    assert throttled.headers["retry-after-ms"] == "750"
    assert (await throttled.json())["error"]["code"] == "rate_limit_exceeded"
    clock.now += 0.75
    again = await client.post("/v1/embeddings", json={"model": EMBEDDER, "input": "x"})
    assert again.status == 200
    stats = await (await client.get("/stats")).json()
    seen = stats["models"][EMBEDDER]
    assert (seen["accepted"], seen["throttled"], seen["max_in_window"]) == (8, 1, 7)
    assert seen["limit"] == 7 and stats["models"][THINKER]["accepted"] == 0


async def test_stats_list_429_times_only_when_asked_and_keep_the_latest(
    aiohttp_client: AiohttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emulator_stats, "THROTTLE_TIMES", 2)
    clock = FakeClock()
    client = await make_client(aiohttp_client, EmulatorConfig(), clock=clock)
    body = chat_body(CODER)
    statuses = []
    for step in (0.0, 0.0, 0.0, 0.1, 0.1):  # 2 RPS: two admitted, then 429s 0.1 s apart
        clock.now += step
        statuses.append((await client.post("/v1/chat/completions", json=body)).status)
    assert statuses == [200, 200, 429, 429, 429]
    plain = (await (await client.get("/stats")).json())["models"][CODER]
    assert plain["throttled"] == 3 and "throttled_at" not in plain
    timed = (await (await client.get("/stats?times=1")).json())["models"][CODER]
    assert timed["throttled_at"] == pytest.approx([1000.1, 1000.2])  # the latest two
    await client.post("/stats/reset")
    after = (await (await client.get("/stats?times=1")).json())["models"][CODER]
    assert after["throttled_at"] == []


async def test_admitted_bad_requests_count_against_the_limit(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await make_client(aiohttp_client, EmulatorConfig(), clock=FakeClock())
    bad = chat_body(messages=[])
    statuses = [(await client.post("/v1/chat/completions", json=bad)).status for _ in range(3)]
    assert statuses == [400, 400, 429]
    seen = (await (await client.get("/stats")).json())["models"][THINKER]
    assert (seen["accepted"], seen["rejected"], seen["throttled"]) == (2, 2, 1)


async def test_stats_reset_zeroes_the_counters(aiohttp_client: AiohttpClient) -> None:
    client = await make_client(aiohttp_client)
    await chat(client, chat_body())
    await client.get("/v1/models", headers={"Authorization": ""})
    reset = await (await client.post("/stats/reset")).json()
    assert reset["models"][THINKER]["accepted"] == 0 and reset["unauthorized"] == 0
    assert reset["models"][THINKER]["max_in_window"] == 0


# --- faults ---------------------------------------------------------------------------------


def test_fault_plan_draws_each_fault_at_its_share_and_repeats_with_the_seed() -> None:
    config = EmulatorConfig(fail_rate=0.2, drop_rate=0.1, cut_stream_rate=0.1, stall_rate=0.05)
    plan = FaultPlan(config)
    drawn = [plan.draw(stream=True).fault for _ in range(10_000)]
    counts = Counter(drawn)
    expected = {
        Fault.ERROR_500: 0.1,
        Fault.ERROR_503: 0.1,
        Fault.DROP: 0.1,
        Fault.CUT: 0.1,
        Fault.STALL: 0.05,
    }
    for fault, share in expected.items():
        assert counts[fault] / 10_000 == pytest.approx(share, abs=0.015)
    plan.reset()
    assert [plan.draw(stream=True).fault for _ in range(100)] == drawn[:100]
    plain = Counter(plan.draw(stream=False).fault for _ in range(10_000))
    assert plain[Fault.CUT] == plain[Fault.STALL] == 0


async def test_injected_failures_and_drops_come_at_about_the_configured_share(
    aiohttp_client: AiohttpClient,
) -> None:
    config = EmulatorConfig(rps_scale=1e9, fail_rate=0.2, drop_rate=0.1, seed=7)
    client = await make_client(aiohttp_client, config)
    outcomes: Counter[int | str] = Counter()
    for _ in range(300):
        try:
            response = await client.post("/v1/embeddings", json={"model": EMBEDDER, "input": "x"})
            outcomes[response.status] += 1
            await response.read()
        except aiohttp.ServerDisconnectedError:
            outcomes["dropped"] += 1
    assert outcomes[500] + outcomes[503] == pytest.approx(60, abs=20)
    assert outcomes[500] > 10 and outcomes[503] > 10
    assert outcomes["dropped"] == pytest.approx(30, abs=15)
    seen = (await (await client.get("/stats")).json())["models"][EMBEDDER]
    assert seen["fault_kinds"]["drop"] == outcomes["dropped"]
    assert seen["faults"] == outcomes[500] + outcomes[503] + outcomes["dropped"]


async def test_cut_stream_closes_the_connection_before_done(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await make_client(aiohttp_client, EmulatorConfig(rps_scale=1e9, cut_stream_rate=1.0))
    response = await client.post("/v1/chat/completions", json=chat_body(stream=True))
    assert response.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()


async def test_stalled_stream_goes_silent_after_one_chunk(aiohttp_client: AiohttpClient) -> None:
    client = await make_client(aiohttp_client, EmulatorConfig(rps_scale=1e9, stall_rate=1.0))
    response = await client.post("/v1/chat/completions", json=chat_body(stream=True))
    first = await response.content.readuntil(b"\n\n")
    assert b'"role":"assistant"' in first
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(response.content.readuntil(b"\n\n"), 0.2)
    response.close()


async def test_latency_and_spikes_delay_the_answer(aiohttp_client: AiohttpClient) -> None:
    config = EmulatorConfig(rps_scale=1e9, latency_s=0.05, spike_rate=1.0, spike_s=0.05)
    client = await make_client(aiohttp_client, config)
    started = time.perf_counter()
    await chat(client, chat_body(CODER))
    assert time.perf_counter() - started >= 0.1
    seen = (await (await client.get("/stats")).json())["models"][CODER]
    assert seen["spikes"] == 1 and seen["faults"] == 0


def test_config_rejects_impossible_shares_and_hides_the_key() -> None:
    with pytest.raises(ValueError, match="fail_rate"):
        EmulatorConfig(fail_rate=1.5)
    with pytest.raises(ValueError, match="stall_rate is"):
        EmulatorConfig(fail_rate=0.6, drop_rate=0.6)
    assert "api_key" not in repr(EmulatorConfig(api_key="k"))


# --- serving, and the official client ---------------------------------------------------------


async def test_running_emulator_serves_without_access_log_and_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp.access")
    async with running_emulator(LIFTED) as url, aiohttp.ClientSession(headers=AUTH) as session:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        async with session.get(f"{url}/models") as response:
            assert response.status == 200
    assert not [r for r in caplog.records if r.name == "aiohttp.access"]
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{url}/models")


async def test_official_openai_client_works_against_the_emulator() -> None:
    async with (
        running_emulator(LIFTED) as url,
        openai.AsyncOpenAI(base_url=url, api_key="test", max_retries=0) as client,
    ):
        models = [model.id async for model in client.models.list()]
        assert models == list(MODELS)
        retrieved = await client.models.retrieve(EMBEDDER)
        assert (retrieved.id, retrieved.object, retrieved.owned_by) == (EMBEDDER, "model", "scibox")
        with pytest.raises(openai.NotFoundError, match="'no-such-model' does not exist"):
            await client.models.retrieve("no-such-model")
        messages: Any = [{"role": "user", "content": TEXT}]
        plain = await client.chat.completions.create(model=CODER, messages=messages)
        assert plain.choices[0].message.content
        stream = await client.chat.completions.create(model=CODER, messages=messages, stream=True)
        parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        assert "".join(parts) == plain.choices[0].message.content
        vectors = await client.embeddings.create(model=EMBEDDER, input=["один", "два"])
        assert [len(item.embedding) for item in vectors.data] == [DIMENSIONS, DIMENSIONS]
        assert vectors.data[0].embedding == pytest.approx(embed("один"), abs=1e-6)
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="nope", messages=messages)


@pytest.mark.serial
def test_serve_prints_its_url_and_the_stats_on_ctrl_c() -> None:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    code = "from batchrun.emulator import serve; serve(port=0)"
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    ) as process:
        assert process.stdout is not None
        first = process.stdout.readline()
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=10)
    assert first.startswith("SciBox emulator on http://127.0.0.1:") and "bge-m3" in first
    assert "bge-m3: accepted 0" in rest and process.returncode == 0
