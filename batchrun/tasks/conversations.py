"""Conversations from a column (``[prompt].messages``): an OpenAI messages list per row.

In JSONL the column holds a JSON array; in Parquet a list of ``{role, content}`` structs, or
the array as JSON text. A row whose value is not such a list is reported with its line by
``validate`` and written as failed by ``run``: it never becomes a request.
"""

from __future__ import annotations

from typing import Any

import orjson

from batchrun.input.readers import has_text

ROLES = ("system", "user", "assistant")
Messages = list[dict[str, str]]


def conversation(value: Any) -> Messages:
    """The messages of a conversation cell; ValueError saying what is wrong with it."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ValueError("is text but not a JSON list of messages") from None
    if not isinstance(value, list) or not value:
        raise ValueError("is not a list of {role, content} messages")
    return [_message(number, item) for number, item in enumerate(value, 1)]


def _message(number: int, item: Any) -> dict[str, str]:
    if not isinstance(item, dict):
        raise ValueError(f"message {number} is not a {{role, content}} object")
    role, content = item.get("role"), item.get("content")
    if role not in ROLES:
        raise ValueError(f"message {number} has role {role!r}; use one of {', '.join(ROLES)}")
    if not has_text(content):
        raise ValueError(f"message {number} ({role}) has no content")
    return {"role": role, "content": content}


def with_system(messages: Messages, system: str | None) -> Messages:
    """``system`` first, unless the conversation has a system message of its own."""
    if system is None or any(message["role"] == "system" for message in messages):
        return messages
    return [{"role": "system", "content": system}, *messages]
