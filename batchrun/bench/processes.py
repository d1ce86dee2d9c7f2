"""The bench's child processes: emulators it starts and stops, and ``batchrun run`` measured
with ``os.wait4`` (wall time, CPU seconds and peak RSS of that child alone) by ``launcher.py``.

Every process is started by the bench, talks only to 127.0.0.1, and is stopped by its pid.
The tests start their emulator processes with the same ``Emulator``.
"""

from __future__ import annotations

import os
import re
import resource
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

TOKEN_ENV = "SCIBOX_API_KEY"
TOKEN = "bench-token"
EMULATOR_KEY_ENV = "EMULATOR_KEY"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
RUN_TIMEOUT_S = 900.0
LAUNCHER = Path(__file__).with_name("launcher.py")
_URL = re.compile(rb"(http://127\.0\.0\.1:\d+/v1)")


class BenchError(Exception):
    """A section could not measure its figures; the message goes into the table."""


def child_env() -> dict[str, str]:
    """The bench's environment plus a token for the emulator (any value is accepted)."""
    return {**os.environ, TOKEN_ENV: TOKEN}


def log_tail(path: Path, lines: int = 3) -> str:
    """The last lines of a child's log, joined on one line."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


@dataclass(frozen=True)
class Seen:
    """What the emulator saw of one model (``GET /stats``)."""

    accepted: int
    throttled: int
    first: float | None
    last: float | None
    throttled_at: tuple[float, ...] = ()
    max_in_window: int = 0
    """The most requests admitted in any window of the model's limit (1 s)."""

    @property
    def admitted_rate(self) -> float:
        """Requests per second the server admitted, from the first admission to the last."""
        if self.first is None or self.last is None or self.accepted < 2 or self.last <= self.first:
            raise BenchError(f"the emulator admitted {self.accepted} request(s): no rate")
        return (self.accepted - 1) / (self.last - self.first)

    @property
    def throttled_share(self) -> float:
        """429s as a share of every request the model's window saw."""
        return self.throttled / max(self.accepted + self.throttled, 1)


class ServerProcess:
    """A server the bench starts for a ``with`` block: leaving the block stops it."""

    def stop(self) -> None:
        raise NotImplementedError

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Emulator(ServerProcess):
    """One ``batchrun emulator`` process on 127.0.0.1 and a free port, for a ``with`` block;
    its log (stderr) is ``workdir/NAME.log``. ``options`` are more of its command-line options
    (``--fail-rate 0.1``); with ``api_key`` it accepts only that token."""

    def __init__(
        self,
        workdir: Path,
        *,
        rps_scale: float = 1.0,
        latency_s: float = 0.0,
        options: Sequence[str] = (),
        api_key: str | None = None,
        name: str = "emulator",
    ) -> None:
        self.log = workdir / f"{name}.log"
        self.command = [sys.executable, "-m", "batchrun", "emulator", "--host", "127.0.0.1"]
        self.command += ["--port", "0", "--rps-scale", f"{rps_scale:g}"]
        self.command += ["--latency", f"{latency_s:g}", *options]
        self.env = child_env()
        if api_key is not None:
            self.command += ["--api-key-env", EMULATOR_KEY_ENV]
            self.env[EMULATOR_KEY_ENV] = api_key
        self.workdir = workdir
        self.base_url = ""
        self.cpu_s = 0.0
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Emulator:
        with self.log.open("wb") as errors:
            self._process = subprocess.Popen(
                self.command,
                cwd=self.workdir,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=errors,
            )
        try:
            self.base_url = self._read_url()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_url(self) -> str:
        assert self._process is not None and self._process.stdout is not None
        line = _first_line(self._process.stdout, START_TIMEOUT_S)
        found = _URL.search(line)
        if not found:
            raise BenchError(f"the emulator did not start: {line!r} {log_tail(self.log)}")
        return found.group(1).decode()

    def stats(self, times: bool = False) -> dict[str, Any]:
        """The emulator's ``/stats`` (with the 429 times when ``times``)."""
        url = self.base_url.removesuffix("/v1") + "/stats" + ("?times=1" if times else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            stats: dict[str, Any] = orjson.loads(response.read())
        return stats

    def seen(self, model: str, times: bool = False) -> Seen:
        """What the emulator saw of ``model``."""
        entry = self.stats(times)["models"][model]
        return Seen(
            entry["accepted"],
            entry["throttled"],
            entry["first_admitted_at"],
            entry["last_admitted_at"],
            tuple(entry.get("throttled_at", ())),
            entry["max_in_window"],
        )

    def stop(self) -> None:
        """Ctrl-C the emulator (it prints its stats and exits), kill it if it lingers, and
        keep the CPU seconds it used (``cpu_s``)."""
        process, self._process = self._process, None
        if process is None:
            return
        os.kill(process.pid, signal.SIGINT)  # not reaped yet: the pid is still ours
        self.cpu_s = _reap(process, STOP_TIMEOUT_S)
        if process.stdout is not None:
            process.stdout.close()


def terminate(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process`` (its pid), kill it if it lingers, and reap it."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _reap(process: subprocess.Popen[bytes], timeout_s: float) -> float:
    """Wait for ``process`` to end (kill it after ``timeout_s``); its CPU seconds."""
    usage = reap(process, timeout_s)
    return usage.ru_utime + usage.ru_stime


def reap(process: subprocess.Popen[bytes], timeout_s: float) -> resource.struct_rusage:
    """Wait for ``process`` to end (kill it after ``timeout_s``), set its return code; what
    it used (CPU, peak memory)."""
    deadline = time.monotonic() + timeout_s
    pid, status, usage = os.wait4(process.pid, os.WNOHANG)
    while not pid:
        if time.monotonic() > deadline:
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(0.02)
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage


def _first_line(stream: IO[bytes], timeout_s: float) -> bytes:
    ready, _, _ = select.select([stream], [], [], timeout_s)
    if not ready:
        raise BenchError(f"the emulator printed nothing in {timeout_s:g} s")
    return stream.readline()


@dataclass(frozen=True)
class Run:
    """One finished ``batchrun run`` child."""

    code: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    spawned_at: float
    log: Path

    @property
    def reruns(self) -> str:
        """What the run's log says of queries run again under a higher memory limit."""
        notes = self.log.read_text(errors="replace").count("ran out of memory under")
        return f"; {notes} queries ran out of memory and ran again" if notes else ""


def run_batchrun(
    job: Path,
    *options: str,
    timeout_s: float = RUN_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> Run:
    """Run ``batchrun run JOB --no-progress`` to its end through ``launcher.py`` (so its peak
    RSS is its own), in ``env`` (default ``child_env()``), its output in ``log`` (default the
    job's path with ``.log``); BenchError unless it exits 0 (all ok) or 1 (some rows failed)."""
    log = log or job.with_suffix(".log")
    runner = [sys.executable, "-m", "batchrun", "run", str(job), "--no-progress", *options]
    command = [sys.executable, str(LAUNCHER), f"{timeout_s:g}", str(log), "--", *runner]
    launched = subprocess.run(
        command,
        cwd=job.parent,
        env=child_env() if env is None else dict(env),
        capture_output=True,
        timeout=timeout_s + 60,
    )
    try:
        report = orjson.loads(launched.stdout.splitlines()[-1])
    except (IndexError, orjson.JSONDecodeError):
        error = launched.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise BenchError(f"the launcher failed (exit {launched.returncode}): {error}") from None
    run = Run(log=log, **report)
    if run.code not in (0, 1):
        raise BenchError(f"batchrun run exited {run.code}: {log_tail(log)}")
    return run
