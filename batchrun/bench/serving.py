"""A ``batchrun serve`` child for the bench and the tests: its config written into a work
directory, started on a free 127.0.0.1 port with the clients' keys in its environment, stopped
by its pid (SIGTERM, or SIGKILL to test a restart) and measured (peak RSS, ``os.wait4``)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from batchrun.bench.processes import (
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    BenchError,
    ServerProcess,
    _first_line,
    child_env,
    log_tail,
    reap,
)

KEYS_ENV = "BATCHRUN_SERVE_KEYS"
_URL = re.compile(rb"(http://127\.0\.0\.1:\d+/v1)")


class Serve(ServerProcess):
    """``batchrun serve --config WORKDIR/serve.toml`` for a ``with`` block; its log (stderr) is
    ``WORKDIR/serve.log``; ``keys`` are the clients' bearer tokens (none: no auth)."""

    def __init__(self, workdir: Path, config: str, keys: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.config = workdir / "serve.toml"
        self.config.write_text(config, encoding="utf-8")
        self.log = workdir / "serve.log"
        self.keys = keys
        self.base_url = ""
        self.peak_rss_mb = 0.0
        self.returncode: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Serve:
        self.start()
        return self

    def start(self) -> None:
        command = [sys.executable, "-m", "batchrun", "serve", "--config", str(self.config)]
        command += ["--port", "0"] + ([] if self.keys else ["--insecure-no-auth"])
        env = {**child_env(), KEYS_ENV: ",".join(self.keys)}
        with self.log.open("ab") as errors:
            self._process = subprocess.Popen(
                command, cwd=self.workdir, env=env, stdout=subprocess.PIPE, stderr=errors
            )
        assert self._process.stdout is not None
        try:
            found = _URL.search(_first_line(self._process.stdout, START_TIMEOUT_S))
        except BenchError:
            found = None
        if not found:
            self.stop()
            raise BenchError(f"batchrun serve did not start: {log_tail(self.log)}")
        self.base_url = found.group(1).decode()

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is saved on the way out."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM (the batches' jobs save what is answered), SIGKILL if it lingers."""
        self._end(signal.SIGTERM)

    def _end(self, how: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        os.kill(process.pid, how)  # not reaped yet: the pid is still ours
        usage = reap(process, STOP_TIMEOUT_S)
        self.returncode = process.returncode
        self.peak_rss_mb = max(self.peak_rss_mb, usage.ru_maxrss / 1024)
        if process.stdout is not None:
            process.stdout.close()
