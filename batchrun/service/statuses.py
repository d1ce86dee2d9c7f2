"""What each HTTP status of the service means for batchrun, written once.

==========================  ======================================================
``RETRYABLE``               try again later (``RetryableError``); any other 5xx too
``REJECTED``                the request is wrong: its rows fail (``RowError``), unless
                            the message names an unknown model (a gateway's 400)
anything else (401/403/404) no request can succeed: stop the run (``FatalError``)
``SERVER_BUSY``             the SciBox guide asks to wait 5–15 s before retrying
``FALLS_BACK``              a row its model keeps failing with these moves to the fallback
==========================  ======================================================

A new status rule is a line here; the client, the retry decision and the sender read it.
"""

from __future__ import annotations

import re

from batchrun.errors import ApiError, FatalError, RetryableError, RowError

THROTTLED = 429
SERVER_BUSY = frozenset({500, 502, 503})
RETRYABLE = frozenset({408, 409, 425, THROTTLED, 504}) | SERVER_BUSY
REJECTED = frozenset({400, 413, 422})
FALLS_BACK = SERVER_BUSY | {THROTTLED, 504}
UNKNOWN_MODEL = re.compile(r"invalid model name|model\b.{0,200}\b(does not exist|not found)", re.I)
"""LiteLLM Proxy answers an unknown model with 400 "Invalid model name passed in model=…"."""


def error_class(status: int, message: str = "") -> type[ApiError]:
    """The error a response with ``status`` (>= 300) and ``message`` becomes."""
    if status in RETRYABLE or status >= 500:
        return RetryableError
    if status in REJECTED and not UNKNOWN_MODEL.search(message):
        return RowError
    return FatalError


def falls_back(error: ApiError) -> bool:
    """Whether ``error`` counts toward moving a row to the fallback model."""
    return error.status in FALLS_BACK


def server_busy(error: ApiError) -> bool:
    """Whether ``error`` asks for the guide's longer wait."""
    return error.status in SERVER_BUSY
