"""Everything batchrun raises, in one tree::

    BatchrunError               base of everything we raise
    ├── JobError                the job file or its input is wrong; the message says where (exit 2)
    ├── OutputError             the output directory cannot be used: locked, unwritable (exit 2)
    └── ApiError                the service answered with an error, or did not answer
        ├── RetryableError      429, 408, 5xx, timeouts, dropped connections, cut streams
        ├── RowError            400: this request is wrong; its rows fail, the run goes on
        └── FatalError          401/403/404, unreachable endpoint: stop the run (exit 3)

Errors of aiohttp are translated into these in exactly one place, ``batchrun.service.client``.
No message ever contains the API key.
"""

from __future__ import annotations

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
