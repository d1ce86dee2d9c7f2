"""Deterministic chat answers: an extractive summary of the user's text, no randomness.

The last user message is split into an instruction and a body (an instruction is a first part
ending with ``:`` and a blank line, as in ``"Сделай резюме в двух предложениях:\\n\\n{text}"``).
The body's sentences are scored by the frequency of their words in the whole body, and the one
or two best are returned in their original order. A thinking model (``ModelInfo.thinks``)
starts with a ``<think>`` block, empty when a system or user message holds ``/no_think``, as
Qwen3 does; :func:`parse_reasoning` takes it apart as vLLM's reasoning parser does. Tokens are
approximated as whitespace-separated words, for ``max_tokens`` and usage.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections import Counter
from dataclasses import dataclass

from batchrun.job.catalog import ModelInfo

Message = tuple[str, str]
"""(role, content) of one chat message."""

_INSTRUCTION = re.compile(r":[ \t]*\r?\n[ \t]*\r?\n")
_INSTRUCTION_SPAN = 400
_ONE_SENTENCE = re.compile(r"\b(одн\w*|one|1)\s+(предложени|sentence)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\s*\n\s*")
_WORD = re.compile(r"\w{4,}")
_TOKEN = re.compile(r"\S+")
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_FRAMING_TOKENS = 3
"""Tokens a chat template adds per message (role markers), in the usage figures."""


@dataclass(frozen=True)
class Summary:
    """The assistant's content, why it ended ("stop" or "length") and the token counts."""

    content: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def count_tokens(text: str) -> int:
    """Approximate tokens of ``text``: its whitespace-separated words."""
    return len(text.split())


@functools.lru_cache(maxsize=4096)
def summarise(model: ModelInfo, messages: tuple[Message, ...], max_tokens: int | None) -> Summary:
    """The answer ``model`` gives to ``messages``: same request, same answer."""
    users = [content for role, content in messages if role == "user"] or [""]
    user = users[-1]
    instruction, body = split_instruction(user)
    wanted = 1 if _ONE_SENTENCE.search(instruction) else 2
    sentences = split_sentences(body)
    chosen = best_sentences(sentences, wanted)
    summary = " ".join(sentences[i] for i in chosen) or "(empty prompt)"
    content = summary
    if model.thinks:
        content = _think_block(messages, len(sentences), chosen) + summary
    finish_reason = "stop"
    if max_tokens is not None:
        content, cut = truncate_tokens(content, max_tokens)
        finish_reason = "length" if cut else "stop"
    prompt_tokens = sum(count_tokens(text) + _FRAMING_TOKENS for _, text in messages)
    return Summary(content, finish_reason, prompt_tokens, count_tokens(content))


def parse_reasoning(content: str) -> tuple[str | None, str]:
    """``(reasoning, answer)`` of ``content``, as vLLM's Qwen3 reasoning parser splits it.

    The reasoning is the text of a leading ``<think>`` block, stripped; an empty block gives
    None. A block cut by ``max_tokens`` before ``</think>`` is all reasoning and no answer.
    Content without a block is all answer.
    """
    if not content.startswith(_THINK_OPEN):
        return None, content
    inner, closed, answer = content.removeprefix(_THINK_OPEN).partition(_THINK_CLOSE)
    return inner.strip() or None, answer.lstrip("\n") if closed else ""


def split_instruction(text: str) -> tuple[str, str]:
    """``(instruction, body)``: the part before the first ``:`` + blank line, and the rest."""
    found = _INSTRUCTION.search(text, 0, _INSTRUCTION_SPAN)
    if found is None:
        return "", text
    return text[: found.start() + 1], text[found.end() :]


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``: split after ``.!?…`` followed by space, and at line breaks."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def best_sentences(sentences: list[str], wanted: int) -> list[int]:
    """Indexes of the ``wanted`` most informative sentences, in their original order.

    A sentence scores the summed body frequency of its words of 4+ letters, divided by the
    square root of its word count (so long sentences do not win by length alone); ties go to
    the earlier sentence.
    """
    words = [_WORD.findall(s.lower()) for s in sentences]
    frequency = Counter(itertools.chain.from_iterable(words))

    def score(i: int) -> tuple[float, int]:
        found = words[i]
        total = sum(frequency[w] for w in found) / math.sqrt(len(found)) if found else 0.0
        return (-total, i)

    return sorted(sorted(range(len(sentences)), key=score)[:wanted])


def truncate_tokens(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut after its ``limit``-th token (``limit`` >= 1), and whether anything was cut."""
    tokens = _TOKEN.finditer(text)
    last = next(itertools.islice(tokens, limit - 1, None), None)
    if last is None or next(tokens, None) is None:
        return text, False
    return text[: last.end()], True


def _think_block(messages: tuple[Message, ...], total: int, chosen: list[int]) -> str:
    if any("/no_think" in text for role, text in messages if role in ("system", "user")):
        return "<think>\n\n</think>\n\n"
    picked = " and ".join(str(i + 1) for i in chosen)
    noun = "sentences" if len(chosen) > 1 else "sentence"
    reasoning = f"The user wants a short summary of a text of {total} sentences. " + (
        f"I keep {noun} {picked}, the most informative, in their original order."
        if chosen
        else "There is nothing to summarise."
    )
    return f"<think>\n{reasoning}\n</think>\n\n"
