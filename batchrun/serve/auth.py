"""Who is asking: the bearer token of each request, checked against the clients' keys
(``[auth].keys_env``, comma-separated, read from the environment at start). A client is known
by a digest of its key (``owner_of``), which is all the state directory ever holds; no key is
logged, stored or echoed. ``--insecure-no-auth`` (127.0.0.1 only) makes every request one
owner, ``anonymous``.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from aiohttp import web

from batchrun.errors import JobError
from batchrun.serve.problems import Problem

ANONYMOUS = "anonymous"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
OPEN_PATHS = ("/metrics", "/health")


def owner_of(key: str) -> str:
    """What the state records of a key: a digest that cannot be turned back into it."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:24]


class Keys:
    """The clients' keys, or none at all (``--insecure-no-auth``)."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._owners = {key: owner_of(key) for key in keys}

    @classmethod
    def from_env(cls, variable: str, *, no_auth: bool, host: str) -> Keys:
        """The keys in ``$variable``; JobError when there are none and auth is not off, or
        when auth is off on anything but the loopback address."""
        keys = tuple(k.strip() for k in os.environ.get(variable, "").split(",") if k.strip())
        if no_auth:
            if host not in LOOPBACK:
                raise JobError(
                    f"--insecure-no-auth serves anyone who can connect: only on 127.0.0.1, "
                    f"not {host}; set {variable} to the clients' keys instead"
                )
            return cls(())
        if not keys:
            raise JobError(
                f"no client keys: set {variable} to comma-separated bearer tokens for the "
                "clients (or pass --insecure-no-auth to serve 127.0.0.1 without them)"
            )
        return cls(keys)

    def owner(self, request: web.Request) -> str:
        """The request's owner; Problem 401 (OpenAI's answer) without a known key."""
        if not self._owners:
            return ANONYMOUS
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(
                401,
                "You didn't provide an API key. Provide it in an Authorization header "
                "(Authorization: Bearer YOUR_KEY).",
                code="missing_api_key",
            )
        for key, owner in self._owners.items():
            if hmac.compare_digest(key.encode(), token.strip().encode()):
                return owner
        raise Problem(401, "Incorrect API key provided.", code="invalid_api_key")
