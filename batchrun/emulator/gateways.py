"""What stands in front of the model, and how it shapes answers and errors.

``"none"``: SciBox as it always was: a thinking model's reasoning stays inline in a ``<think>``
block of the content, a stream always ends with its usage, an unknown model is a 404, a 429
says ``Retry-After``.

``"vllm"``: vLLM's OpenAI server with a reasoning parser, talked to directly. The reasoning
moves to ``message.reasoning`` (``delta.reasoning`` in a stream; null when the think block is
empty, as under ``/no_think``) and the content holds only the answer; a stream sends its usage
only for ``stream_options: {"include_usage": true}``, alone in a last chunk with
``choices: []``; the sampling parameters are type-checked (a 400 names the parameter).

``"litellm"``: LiteLLM Proxy in front of vLLM (measured on 1.108.7): as ``"vllm"``, but the
field is ``reasoning_content`` (absent when there is none); an unknown model is a 400 in
LiteLLM's words; every 200 carries ``x-ratelimit-limit-requests`` and
``x-ratelimit-remaining-requests`` (the model's count per window, and what the current window
has left after this request); a 429 has no ``Retry-After`` but ``llm_provider-retry-after``
(the window's length in whole seconds) and LiteLLM's error body.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from batchrun.emulator.bodies import UnknownModel
from batchrun.emulator.config import GatewayName
from batchrun.emulator.limits import Window
from batchrun.emulator.replies import HttpError
from batchrun.emulator.streaming import UsagePlace
from batchrun.emulator.summaries import Summary, parse_reasoning

MINUTE_S = 60.0
"""LiteLLM's ``x-ratelimit-*-requests`` count per minute (a deployment's ``rpm``)."""


@dataclass(frozen=True)
class Gateway:
    """One gateway's shape: ``reasoning_field`` (None: inline ``<think>``), ``typed`` (vLLM's
    typed request: checked sampling parameters, usage on request), ``litellm`` (LiteLLM's
    errors and quota headers)."""

    name: GatewayName
    reasoning_field: str | None
    typed: bool
    litellm: bool

    def message(self, answer: Summary) -> dict[str, object]:
        """The ``message`` of a plain chat answer."""
        if self.reasoning_field is None:
            return {"role": "assistant", "content": answer.content}
        reasoning, content = parse_reasoning(answer.content)
        message: dict[str, object] = {"role": "assistant", "content": content or None}
        if reasoning is not None or not self.litellm:  # LiteLLM drops a null reasoning field
            message[self.reasoning_field] = reasoning
        return message

    def usage_place(self, include_usage: bool) -> UsagePlace:
        """Where a stream's usage goes, given ``stream_options.include_usage``."""
        if not self.typed:
            return "last"
        return "alone" if include_usage else "none"

    def quota_headers(self, window: Window) -> dict[str, str]:
        """The headers of a 200 right after ``window`` admitted it: LiteLLM's, which count
        requests per minute, so only for a 60-s window (none otherwise)."""
        if not self.litellm or window.period != MINUTE_S:
            return {}
        return {
            "x-ratelimit-limit-requests": str(window.capacity),
            "x-ratelimit-remaining-requests": str(window.remaining()),
        }

    def unknown_model(self, exc: UnknownModel) -> HttpError:
        """The error for a model that is not served."""
        if not self.litellm:
            return HttpError(404, str(exc), "invalid_request_error", "model_not_found")
        message = (
            f"Invalid model name passed in model={exc.name}. "
            "Call `/v1/models` to view available models for your key."
        )
        return HttpError(400, message, "None", "400", param="None")

    def throttled(self, name: str, window: Window, wait: float) -> HttpError:
        """The 429 for a request to ``name`` that ``window`` refused for ``wait`` seconds."""
        if self.litellm:
            return _litellm_throttled(name, window)
        limit, period = window.capacity, window.period
        message = (
            f"Rate limit exceeded for '{name}': {limit} requests per {period:g} s; retry later"
        )
        retry = {
            "Retry-After": str(max(1, math.ceil(wait))),
            "retry-after-ms": str(math.ceil(wait * 1e3)),
        }
        return HttpError(429, message, "rate_limit_error", "rate_limit_exceeded", retry)


def _litellm_throttled(name: str, window: Window) -> HttpError:
    """LiteLLM's 429: the router found no deployment under its ``rpm``; it says to retry after
    the whole window, however soon the window really ends."""
    seconds = max(1, math.ceil(window.period))
    message = (
        "litellm.RateLimitError: No deployments available for selected model, "
        f"Try again in {seconds} seconds. Passed model={name}. The deployment is over its "
        f"rpm limit ({window.capacity} requests per {window.period:g} s)."
    )
    headers = {"llm_provider-retry-after": str(seconds)}
    return HttpError(429, message, "None", "429", headers, param="None")


GATEWAYS: dict[GatewayName, Gateway] = {
    "none": Gateway("none", reasoning_field=None, typed=False, litellm=False),
    "vllm": Gateway("vllm", reasoning_field="reasoning", typed=True, litellm=False),
    "litellm": Gateway("litellm", reasoning_field="reasoning_content", typed=True, litellm=True),
}
"""Every gateway by its :data:`~batchrun.emulator.config.GatewayName`."""
