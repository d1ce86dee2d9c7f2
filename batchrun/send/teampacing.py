"""Team-wide pacing: every batchrun process of a workspace draws its send slots for a model
from one limiter kept in Redis, so together they never exceed the model's rate.

The algorithm is GCRA, the generic cell rate algorithm, with a burst of 1, run as one Lua
script so that it is atomic in Redis. Redis keeps, per workspace and model, the theoretical
arrival time (TAT) of the next request, in microseconds of Redis's own clock (``TIME``), so the
machines' clocks never matter. Reserving a slot is::

    now = TIME;  tat = max(GET key, now);  SET key (tat + interval);  return tat - now

and the caller sleeps ``tat - now`` and sends. Slots are thus handed out one interval apart, in
the order they are asked for, across all processes: two jobs asking at the same time alternate
and get half each; one job alone gets them all. Each process has one reserving coroutine per
model (the ``Pacer``'s lock, whose adaptive rate sets the interval): a worker waits for its
turn locally, and only the holder talks to Redis, so waiting workers never poll it.

If Redis goes away mid-run, sending pauses (no slot, no request) and the reservation is retried
with backoff until Redis answers again; batchrun never falls back to unlimited sending.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from batchrun.clock import Clock, Sleep
from batchrun.errors import JobError

RESERVE = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000000 + tonumber(now[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', next_tat),
           'PX', math.ceil((next_tat - now) / 1000) + 1000)
return tat - now
"""
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 10.0


class TeamLimiter:
    """The Redis side: reserves slots for any model of one workspace."""

    def __init__(
        self,
        url: str,
        workspace: str,
        *,
        on_lost: Callable[[bool], None] = lambda lost: None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self.url = url
        self._clock = clock
        self.workspace = workspace
        self._client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._reserve = self._client.register_script(RESERVE)
        self._on_lost = on_lost
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"TeamLimiter({redacted(self.url)!r}, workspace={self.workspace!r})"

    async def check(self) -> None:
        """Fail at start (JobError: exit 2) when Redis cannot be reached."""
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise JobError(
                f"[limits].shared: cannot reach Redis at {redacted(self.url)} ({exc}); "
                "start it, fix the URL, or remove [limits].shared to pace this process alone"
            ) from None

    async def reserve(self, model: str, interval_s: float) -> float:
        """Reserve the model's next slot; return the seconds to wait for it, counted from now.
        The script ran about half a round trip ago, so that much is already waited: processes
        far from Redis and near it send on the same schedule. While Redis is unreachable, wait
        and try again: never a slot without Redis."""
        key = f"batchrun:limit:{self.workspace}:{model}"
        delay = RECONNECT_FIRST_S
        while True:
            asked = self._clock()
            try:
                waited_us = await self._reserve(keys=[key], args=[round(interval_s * 1e6)])
            except (RedisError, OSError):
                self._on_lost(True)
                await self._sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            if delay != RECONNECT_FIRST_S:
                self._on_lost(False)
            half_trip = (self._clock() - asked) / 2
            return max(int(waited_us) / 1e6 - half_trip, 0.0)

    async def close(self) -> None:
        await self._client.aclose()


class TeamSlots:
    """A slot source for one model drawn from the team's limiter (see ``pacing.SlotSource``).

    Each reservation tells when the team's next slot is free (ours, plus the interval), which
    ``expected_wait()`` remembers: a pool chooses by what the whole team has reserved, as of
    this process's last reservation, without asking Redis."""

    def __init__(
        self,
        model: str,
        limiter: TeamLimiter,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._model = model
        self._limiter = limiter
        self._clock = clock
        self._sleep = sleep
        self._next = clock()

    async def take(self, interval_s: float) -> None:
        wait = await self._limiter.reserve(self._model, interval_s)
        self._next = self._clock() + wait + interval_s
        if wait > 0:
            await self._sleep(wait)

    def expected_wait(self) -> float:
        return max(self._next - self._clock(), 0.0)


def redacted(url: str) -> str:
    """A Redis URL without its password, fit for a message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=f"{user}{host}{port}"))


def default_workspace(base_url: str) -> str:
    """The workspace a job shares its limits in, from the endpoint (never from the key)."""
    parts = urlsplit(base_url)
    return f"{parts.hostname or base_url}{parts.path.rstrip('/')}" if parts.scheme else base_url
