"""Moments in a child's run to act at (stop it, kill it, start another beside it) that do not
depend on how busy the machine is: it has begun loading its libraries, printed a line, had
requests admitted by the emulator, sealed a part, taken a signal. Each waits by polling up to
a deadline, then fails saying what never came. The process's state is read from Linux's
/proc, as the kernel keeps it."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sysconfig
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson

POLL_S = 0.05
TIMEOUT_S = 60.0


def wait_until(ready: Callable[[], bool], missing: str, timeout_s: float = TIMEOUT_S) -> None:
    """Poll ``ready`` until it holds; after ``timeout_s``, fail with ``missing`` (what did not
    happen)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{missing} within {timeout_s} s")
        time.sleep(POLL_S)


def wait_for_a_part(output: Path, owner: str = "", timeout_s: float = TIMEOUT_S) -> None:
    """Wait until a run has sealed its first part into ``output`` (of a shard, ``s2of3``,
    when ``owner`` names one)."""
    pattern = f"part-{owner}*.parquet"
    wait_until(lambda: any(output.glob(pattern)), f"no {pattern} in {output}", timeout_s)


def requests_admitted(base_url: str, model: str) -> int:
    """How many requests the emulator at ``base_url`` admitted for ``model`` (its /stats)."""
    with urllib.request.urlopen(_stats_url(base_url), timeout=5) as reply:
        count: int = orjson.loads(reply.read())["models"][model]["accepted"]
    return count


async def accepted_requests(base_url: str, model: str) -> int:
    """``requests_admitted``, for a test that runs the emulator in its own event loop."""
    async with aiohttp.ClientSession() as session, session.get(_stats_url(base_url)) as reply:
        stats = await reply.json()
    count: int = stats["models"][model]["accepted"]
    return count


def _stats_url(base_url: str) -> str:
    return base_url.removesuffix("/v1") + "/stats"


def wait_until_sending(
    base_url: str, model: str, count: int = 1, timeout_s: float = TIMEOUT_S
) -> None:
    """Wait until the emulator at ``base_url`` has admitted ``count`` requests for ``model``
    (counted since it started)."""
    wait_until(
        lambda: requests_admitted(base_url, model) >= count,
        f"{model} got fewer than {count} requests",
        timeout_s,
    )


def wait_until_loading(process: subprocess.Popen[str], timeout_s: float = TIMEOUT_S) -> None:
    """Wait until a ``batchrun`` child has begun loading its libraries: a compiled module of
    the installed packages is mapped into it (the interpreter and ``python -m batchrun``'s
    own start, which load none, are behind it)."""
    packages = os.path.realpath(sysconfig.get_path("platlib"))  # maps holds real paths

    def mapped() -> bool:
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        return any(line.endswith(".so") and packages in line for line in maps.splitlines())

    wait_until(mapped, f"{process.args!r} loaded nothing from {packages}", timeout_s)


def wait_for_output(
    process: subprocess.Popen[str], wanted: str, timeout_s: float = TIMEOUT_S
) -> str:
    """Read a child's stdout until ``wanted`` has been printed; what was read. The rest stays
    in the pipe for ``finish`` (read from the pipe itself, so nothing is held back in the
    file object's buffer)."""
    assert process.stdout is not None
    pipe, read = process.stdout.fileno(), b""
    deadline = time.monotonic() + timeout_s
    while wanted.encode() not in read:
        left = deadline - time.monotonic()
        readable, _, _ = select.select([pipe], [], [], max(left, 0))
        chunk = os.read(pipe, 65536) if readable else b""
        if not chunk:
            ended = "ended" if readable else f"ran {timeout_s} s"
            raise AssertionError(f"{process.args!r} {ended} without printing {wanted!r}: {read!r}")
        read += chunk
    return read.decode(errors="replace")


def wait_until_taken(
    process: subprocess.Popen[str], sig: signal.Signals, timeout_s: float = 10.0
) -> None:
    """Wait until a signal sent to a child is no longer pending: delivered to its handler, so
    that the next one sent is a second signal, not merged into this one."""
    bit = 1 << (sig - 1)

    def taken() -> bool:
        status = Path(f"/proc/{process.pid}/status").read_text().splitlines()
        pending = [line.split()[1] for line in status if line.startswith(("SigPnd", "ShdPnd"))]
        return not any(int(mask, 16) & bit for mask in pending)

    wait_until(taken, f"{process.args!r} did not take {sig.name}", timeout_s)
