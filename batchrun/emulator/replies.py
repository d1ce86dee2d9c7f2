"""JSON replies, and the error reply every failure becomes: ``{"error": {message, type, code}}``.

Handlers and gateways raise :class:`HttpError`; the server's middleware turns it into the reply.
"""

from __future__ import annotations

import orjson
from aiohttp import web


def json_reply(
    payload: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """``payload`` as an ``application/json`` reply."""
    body = orjson.dumps(payload)
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")


class HttpError(Exception):
    """An error answer with an OpenAI-style body: ``{"error": {message, type, code}}``, plus
    ``param`` when one is given (LiteLLM always sends it, as the string ``"None"``)."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str,
        code: str,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code
        self.headers = headers
        self.param = param

    def response(self) -> web.Response:
        """The JSON answer of this error."""
        error = {"message": self.message, "type": self.kind}
        if self.param is not None:
            error["param"] = self.param
        error["code"] = self.code
        return json_reply({"error": error}, self.status, self.headers)
