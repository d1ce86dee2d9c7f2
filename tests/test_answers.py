"""Service answers as typed results: think blocks split off, vectors in order, SSE joined."""

from __future__ import annotations

import base64
from array import array
from typing import Any

import orjson
import pytest

from batchrun.errors import RetryableError
from batchrun.service.answers import (
    ChatAnswer,
    StreamAccumulator,
    chat_answer,
    embedding_answer,
    split_think,
)


def test_split_think_moves_the_thinking_block_to_the_reasoning() -> None:
    content = "<think>\nThe user wants two sentences.\n</think>\n\nThe council met. It was sunny."

    assert split_think(content) == (
        "The council met. It was sunny.",
        "The user wants two sentences.",
    )


def test_split_think_with_an_empty_block_gives_no_reasoning() -> None:
    assert split_think("<think>\n\n</think>\n\nShort answer.") == ("Short answer.", None)


def test_split_think_without_a_block_keeps_the_content() -> None:
    assert split_think("  Plain answer.\n") == ("Plain answer.", None)


def test_split_think_only_takes_a_leading_block() -> None:
    content = "Use <think>tags</think> like this."

    assert split_think(content) == (content, None)


def test_split_think_keeps_reasoning_given_separately() -> None:
    assert split_think("Answer.", "  step one  ") == ("Answer.", "step one")
    assert split_think("Answer.", "") == ("Answer.", None)


def chat_body(content: str, **message: Any) -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }


def test_chat_answer_reads_content_reasoning_and_usage() -> None:
    answer = chat_answer(chat_body("<think>hmm</think>Two sentences."))

    assert answer == ChatAnswer("Two sentences.", "hmm", "stop", 12, 7)


def test_chat_answer_takes_reasoning_content_from_the_message() -> None:
    answer = chat_answer(chat_body("Answer.", reasoning_content="thought it through"))

    assert (answer.content, answer.reasoning) == ("Answer.", "thought it through")


def test_chat_answer_cut_while_thinking_has_null_content_and_no_usage() -> None:
    body = chat_body("")
    body["choices"][0]["message"]["content"] = None
    body["choices"][0]["finish_reason"] = "length"
    del body["usage"]

    answer = chat_answer(body)

    assert answer == ChatAnswer("", None, "length", None, None)


def test_chat_answer_with_null_content_is_retryable_not_an_empty_answer() -> None:
    body = chat_body("")
    body["choices"][0]["message"]["content"] = None

    with pytest.raises(RetryableError, match="content: null"):
        chat_answer(body)


@pytest.mark.parametrize("usage", ["lots", {"prompt_tokens": "lots"}, {"prompt_tokens": -100}])
def test_a_malformed_usage_is_unknown_never_a_crash(usage: object) -> None:
    body: dict[str, Any] = {**chat_body("Answer."), "usage": usage}
    vectors = {"data": [{"index": 0, "embedding": [0.5]}], "usage": usage}

    assert chat_answer(body).prompt_tokens is None
    assert embedding_answer(vectors, expected=1).prompt_tokens is None


@pytest.mark.parametrize("body", [{}, {"choices": []}, {"choices": [{}]}, {"choices": "x"}])
def test_chat_answer_without_a_message_is_retryable(body: dict[str, Any]) -> None:
    with pytest.raises(RetryableError, match=r"without a usable choices\[0\].message"):
        chat_answer(body)


def test_embedding_answer_orders_vectors_by_index() -> None:
    body = {
        "data": [
            {"index": 2, "embedding": [2.0]},
            {"index": 0, "embedding": [0.0]},
            {"index": 1, "embedding": [1.0]},
        ],
        "usage": {"prompt_tokens": 9},
    }

    answer = embedding_answer(body, expected=3)

    assert [list(array("f", v)) for v in answer.vectors] == [[0.0], [1.0], [2.0]]
    assert answer.prompt_tokens == 9


def test_embedding_answer_decodes_base64_float32() -> None:
    packed = array("f", [0.25, -1.5]).tobytes()
    body = {"data": [{"index": 0, "embedding": base64.b64encode(packed).decode()}]}

    assert embedding_answer(body, expected=1).vectors == [packed]


def test_embedding_answer_with_broken_base64_is_retryable() -> None:
    body = {"data": [{"index": 0, "embedding": "not base64!"}]}

    with pytest.raises(RetryableError):
        embedding_answer(body, expected=1)


def test_embedding_answer_with_the_wrong_count_is_retryable() -> None:
    body = {"data": [{"index": 0, "embedding": [0.0]}]}

    with pytest.raises(RetryableError, match=r"2 inputs with indexes \[0\], not each of 0..1"):
        embedding_answer(body, expected=2)


@pytest.mark.parametrize(
    "indexes", [[0, 0, 0], [0, 1, 1], [1, 2, 3], [0, 1, True], [0, 1, "2"], [0, 1, 2, 2]]
)
def test_embedding_answer_needs_each_index_exactly_once(indexes: list[object]) -> None:
    body = {"data": [{"index": i, "embedding": [float(n)]} for n, i in enumerate(indexes)]}

    with pytest.raises(RetryableError):
        embedding_answer(body, expected=3)


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_embedding_answer_with_a_number_that_is_not_finite_is_retryable(number: float) -> None:
    packed = base64.b64encode(array("f", [0.5, number]).tobytes()).decode()
    body = {"data": [{"index": 0, "embedding": packed}]}

    with pytest.raises(RetryableError, match="NaN or infinity"):
        embedding_answer(body, expected=1)


def test_embedding_answer_without_data_is_retryable() -> None:
    with pytest.raises(RetryableError, match=r"without data\[\].embedding"):
        embedding_answer({"data": [{"index": 0}]}, expected=1)


def sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n"


def delta(content: str = "", reasoning: str = "", finish: str | None = None) -> bytes:
    return sse(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": content, "reasoning_content": reasoning},
                    "finish_reason": finish,
                }
            ]
        }
    )


def test_stream_accumulator_joins_deltas_into_one_answer() -> None:
    stream = StreamAccumulator()
    for line in [
        b": keep-alive\n",
        delta("<think>a "),
        b"\n",
        delta("b</think>"),
        b"event: message\n",
        delta("Hello, "),
        delta("world.", finish="stop"),
        sse({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}),
        b"data: [DONE]\n",
    ]:
        stream.feed(line)

    assert stream.done
    assert stream.finish() == ChatAnswer("Hello, world.", "a b", "stop", 5, 3)


def test_stream_accumulator_joins_separate_reasoning_deltas() -> None:
    stream = StreamAccumulator()
    for line in [delta(reasoning="think "), delta(reasoning="more"), delta("Yes."), b"data:[DONE]"]:
        stream.feed(line)

    answer = stream.finish()

    assert (answer.content, answer.reasoning) == ("Yes.", "think more")


def test_stream_accumulator_takes_vllms_reasoning_field_and_litellms_usage_chunk() -> None:
    stream = StreamAccumulator()
    for line in [
        sse({"choices": [{"index": 0, "delta": {"reasoning": "think "}}]}),
        sse({"choices": [{"index": 0, "delta": {"reasoning": "more"}}]}),
        sse({"choices": [{"index": 0, "delta": {"content": "Yes."}, "finish_reason": "stop"}]}),
        sse(
            {
                "choices": [{"index": 0, "delta": {}}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 4},
            }
        ),
        b"data: [DONE]\n",
    ]:
        stream.feed(line)

    assert stream.finish() == ChatAnswer("Yes.", "think more", "stop", 9, 4)


def test_chat_answer_takes_vllms_reasoning_field() -> None:
    answer = chat_answer(chat_body("Answer.", reasoning="weighed it"))

    assert (answer.content, answer.reasoning) == ("Answer.", "weighed it")


def test_stream_cut_before_done_is_retryable() -> None:
    stream = StreamAccumulator()
    stream.feed(delta("Half an ans"))

    assert not stream.done
    with pytest.raises(RetryableError, match="cut short before"):
        stream.finish()


def test_stream_line_that_is_not_json_is_retryable() -> None:
    with pytest.raises(RetryableError, match="not a completion chunk"):
        StreamAccumulator().feed(b'data: {"choices": [\n')


def test_a_stream_whose_deltas_never_carry_content_is_retryable() -> None:
    stream = StreamAccumulator()
    for line in [
        sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]}),
        sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        b"data: [DONE]\n",
    ]:
        stream.feed(line)

    with pytest.raises(RetryableError, match="content: null"):
        stream.finish()
