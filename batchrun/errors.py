"""Everything batchrun raises, in one tree::

    BatchrunError               base of everything we raise
    ├── JobError                the job file or its input is wrong; the message says where (exit 2)
    ├── OutputError             the output directory cannot be used: locked, unwritable (exit 2)
    └── ApiError                the service answered with an error, or did not answer
        ├── RetryableError      429, 408, 5xx, timeouts, dropped connections, cut streams
        ├── RowError            400: this request is wrong; its rows fail, the run goes on
        └── FatalError          401/403/404, unreachable endpoint: stop the run (exit 3)

Errors of aiohttp are translated into these in exactly one place, ``batchrun.service.client``;
an OSError writing the output, by ``cannot_write``. No message ever contains the API key.
"""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Iterator
from pathlib import Path

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

EXIT_OK, EXIT_ROWS_FAILED, EXIT_BAD_JOB, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
"""The command's exit codes (``batchrun.cli`` says which error gets which)."""


class BatchrunError(Exception):
    """Base of everything we raise."""


class JobError(BatchrunError):
    """The job file or its input is wrong; the message names the file, the key and the fix."""


class OutputError(BatchrunError):
    """The output directory cannot be used (locked by another run, not writable)."""


class ApiError(BatchrunError):
    """The service answered with an error, or did not answer at all."""

    def __init__(self, message: str, status: int | None = None, model: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.model = model
        """The model the failed request was sent to, when there was one."""
        self.answer: bytes | None = None
        """The service's error answer as it was sent (an HTTP error's body), for the output
        of a batch file (``tasks.openai_batch``)."""
        self.request_id: str | None = None
        """The answer's ``x-request-id`` header, when it had one."""


class RetryableError(ApiError):
    """429, 408, 5xx, timeouts, resets, cut streams: the same request may succeed later."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        retry_after: float | None = None,
        model: str | None = None,
        *,
        window_reset: float | None = None,
    ) -> None:
        super().__init__(message, status, model)
        self.retry_after = retry_after
        self.window_reset = window_reset
        """A 429 that says a rate window ran out: seconds until it resets."""


class RowError(ApiError):
    """400: the service rejects this request's payload; its rows fail, the run goes on."""


class FatalError(ApiError):
    """401/403/404 or an endpoint that does not answer: no request can succeed, stop the run."""


def fatal_first(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    """The errors of a task group, flattened, fatal ones first (the one to report)."""
    flat: list[Exception] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            flat += fatal_first(error)
        else:
            flat.append(error)
    return sorted(flat, key=lambda e: not isinstance(e, FatalError))


def cannot_write(path: Path | str, exc: OSError, what: str = "cannot write") -> OutputError:
    """An OSError writing ``path`` (the output, a temporary file) as our error; a full disk
    (or quota) says how to go on."""
    if exc.errno in DISK_FULL:
        return OutputError(
            f"{path}: {what}: no space left on its disk; free some space there and run the "
            "same command again (what is done is kept)"
        )
    return OutputError(f"{path}: {what} ({exc})")


@contextlib.contextmanager
def disk_full_said(path: Path | str, what: str = "cannot write") -> Iterator[None]:
    """In the block, a full disk (an OSError of ENOSPC or EDQUOT, from wherever it is
    written: a temporary file, the input index) is ``cannot_write``'s OutputError."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        raise cannot_write(exc.filename or path, exc, what) from None


def warn(text: str) -> None:
    """A warning for the user, on stderr."""
    print(f"warning: {text}", file=sys.stderr, flush=True)
