"""Errors as OpenAI answers them: ``{"error": {"message", "type", "param", "code"}}`` with its
status code. A handler raises ``Problem``; the middleware here turns it, and anything else, into
that body: a client never sees a traceback (an unexpected error is logged here, without the
request's headers, and answered 500)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger("batchrun.serve")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Problem(Exception):
    """An answer that is an error: status, message, and OpenAI's type, param and code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.kind, self.param, self.code = kind, param, code

    def response(self) -> web.Response:
        return error_response(self.status, self.message, self.kind, self.param, self.code)


def error_response(
    status: int, message: str, kind: str, param: str | None = None, code: str | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status)


def not_found(what: str, object_id: str) -> Problem:
    """OpenAI's 404: the same for an id that does not exist and one of another key."""
    return Problem(404, f"No such {what}: '{object_id}'.", param="id", code=None)


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return problem.response()
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(413, _too_large(exc), "invalid_request_error", code="too_large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason, _kind(exc.status))
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return error_response(500, "The server had an error; try again.", "server_error")


def _too_large(exc: web.HTTPRequestEntityTooLarge) -> str:
    return f"The request body is too large: {exc.text or 'over the limit'}."


def _kind(status: int) -> str:
    return "invalid_request_error" if status < 500 else "server_error"
