"""A throwaway ``redis-server`` for the ``team`` section and the tests: 127.0.0.1, a free
port, no persistence (``--save "" --appendonly no``), its own directory; started for a ``with``
block, ready once it answers ``PING``, and stopped by its pid (SIGTERM, then SIGKILL if it
lingers). It can be stopped and restarted on the same port, to test a lost connection.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from batchrun.bench.processes import (
    START_TIMEOUT_S,
    BenchError,
    ServerProcess,
    log_tail,
    terminate,
)

HOST = "127.0.0.1"
ATTEMPTS = 3
"""Tries, each on a new free port (another process may take the port between the pick and
the server's bind)."""


class RedisServer(ServerProcess):
    """One ``redis-server`` process, for a ``with`` block; ``url`` names its database 0."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.log = workdir / "redis-server.log"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def __enter__(self) -> RedisServer:
        for _ in range(ATTEMPTS):
            self.port = free_port()
            if self._started():
                return self
        raise BenchError(f"redis-server did not start: {log_tail(self.log)}")

    def restart(self) -> None:
        """Start the server again on its port, after ``stop()``."""
        if not self._started():
            raise BenchError(
                f"redis-server did not restart on port {self.port}: {log_tail(self.log)}"
            )

    def _started(self) -> bool:
        """Start the server on ``self.port``; whether it became ready (if not, it is stopped)."""
        self._spawn()
        if self._wait_ready():
            return True
        self.stop()
        return False

    def _spawn(self) -> None:
        command = [self.binary, "--bind", HOST, "--port", str(self.port), "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.workdir)]
        with self.log.open("ab") as sink:
            self._process = subprocess.Popen(
                command, cwd=self.workdir, stdout=sink, stderr=subprocess.STDOUT
            )

    def _wait_ready(self) -> bool:
        """Whether the server answers PING before it exits or the start timeout passes."""
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self._process.poll() is None:
            if answers_ping(self.port):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Terminate the server (its pid), kill it if it lingers."""
        process, self._process = self._process, None
        if process is not None:
            terminate(process)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def answers_ping(port: int) -> bool:
    """Whether a Redis server on ``port`` accepts a connection and answers ``PING``."""
    try:
        with socket.create_connection((HOST, port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False
