"""The batches' lifecycle, driven by one supervisor loop over the state:

    validating ──▶ failed (errors.data: every bad line)
        └──▶ in_progress ──▶ finalizing ──▶ completed
                 ├──▶ cancelling ──▶ cancelled   (answered lines kept in the output file)
                 └──▶ expired                    (the rest as batch_expired)

Every step is written to the state first, so a killed server picks each batch up where its
status says: ``validating`` is checked again, ``in_progress`` resumes its job (the runner's
resume: each line answered exactly once), ``finalizing`` and ``cancelling`` write their files
again. At most ``[batches].max_running`` jobs run at once, oldest first; they share each
model's quota round robin (``fairslots``). On shutdown every job stops as on SIGTERM (what is
answered is saved) and its batch stays ``in_progress`` for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from batchrun.errors import BatchrunError
from batchrun.output.done import output_counts
from batchrun.output.rows import FAILED, OK
from batchrun.runner import RunOptions, run_job
from batchrun.send.stats import RunStats
from batchrun.serve.batchjobs import BatchJobs
from batchrun.serve.fairslots import SharedPacing
from batchrun.serve.state import BatchRow, State, now
from batchrun.serve.upstream import Upstream
from batchrun.serve.validation import check_file
from batchrun.service.endpoint import Unreachable
from batchrun.tasks import job_schema, task_for

log = logging.getLogger("batchrun.serve")
TICK_S = 0.25
TICK_AFTER_ERROR_S = 5.0
UNREACHABLE_WAIT_S = 30.0
ENDS = ("cancel", "expire", "shutdown")
Step = Coroutine[Any, Any, None]
UNFINISHED = ("validating", "in_progress", "finalizing", "cancelling")


@dataclass
class Running:
    """A batch whose job runs now: its live counters and how to stop it."""

    base_ok: int = 0
    base_failed: int = 0
    stats: RunStats | None = None
    stop: Callable[[], None] | None = None
    reason: str | None = None
    """Why it was asked to stop: one of ``ENDS``."""

    def counts(self) -> tuple[int, int]:
        stats = self.stats
        if stats is None:
            return self.base_ok, self.base_failed
        return self.base_ok + stats.rows_ok, self.base_failed + stats.rows_failed

    def end(self, reason: str) -> None:
        self.reason = self.reason or reason
        if self.stop is not None:
            self.stop()


class BatchRunner:
    """Takes batches through their lifecycle; one per server."""

    def __init__(
        self, state: State, jobs: BatchJobs, upstream: Upstream, pacing: SharedPacing,
        *, max_running: int, rates: dict[str, float],
    ) -> None:  # fmt: skip
        self._state, self._jobs = state, jobs
        self._upstream, self._pacing = upstream, pacing
        self._max_running, self._rates = max_running, rates
        self._active: dict[str, Running] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._not_before: dict[str, float] = {}
        self._threads = ThreadPoolExecutor(max_running, thread_name_prefix="batch")

    def running(self) -> dict[str, Running]:
        return self._active

    def counts(self, row: BatchRow) -> tuple[int, int]:
        """The batch's (completed, failed) now: live while its job runs."""
        running = self._active.get(row.id)
        if running is None or running.stats is None:
            return row.completed, row.failed
        return running.counts()

    def poke(self) -> None:
        """Something changed (a new batch, a cancel): look at the state now."""
        self._wake.set()

    def cancel(self, batch_id: str) -> None:
        if (running := self._active.get(batch_id)) is not None:
            running.end("cancel")
        self.poke()

    def shutdown(self) -> None:
        self._stopping = True
        for running in self._active.values():
            running.end("shutdown")
        self.poke()

    async def run(self) -> None:
        """The supervisor: until shutdown, and then until every job has saved its work."""
        try:
            async with asyncio.TaskGroup() as group:
                while not self._stopping:
                    self._wake.clear()  # (before the look: a poke during it is seen next)
                    wait = self._looked(group)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
        finally:
            self._threads.shutdown(wait=True)

    def _looked(self, group: asyncio.TaskGroup) -> float:
        """One look at the state; how long until the next. A look that fails (the state's
        disk, say) is logged and tried again a little later: the server and the batches'
        jobs go on."""
        try:
            self._tick(group)
        except Exception:
            log.exception(
                "cannot look at the batches' state; trying again in %g s", TICK_AFTER_ERROR_S
            )
            return TICK_AFTER_ERROR_S
        return TICK_S

    def _tick(self, group: asyncio.TaskGroup) -> None:
        for row in self._state.batches_in(UNFINISHED):
            if row.id in self._active:
                self._watch(row)
                continue
            if row.status == "in_progress" and now() >= row.expires_at:
                self._start(group, row, self._finish(row, "expired"))
            elif self._may_start(row):
                self._start(group, row, self._step(row))

    def _may_start(self, row: BatchRow) -> bool:
        """Whether a batch's step may start now: it did not just meet an unreachable upstream
        or a state that could not be written, and (for a job) a place is free."""
        if time.monotonic() < self._not_before.get(row.id, 0.0):
            return False
        return row.status != "in_progress" or len(self._active) < self._max_running

    def _watch(self, row: BatchRow) -> None:
        """A running job is stopped when its window has passed. (Its counts are answered live
        from memory and written when it ends: a commit is an fsync, and a stall of 20 ms on
        the loop that paces the requests puts three of a 2 RPS model in one second.)"""
        running = self._active[row.id]
        if running.reason is None and row.status == "in_progress" and now() >= row.expires_at:
            running.end("expire")  # (once: a second stop would cancel its requests at once)

    def _start(self, group: asyncio.TaskGroup, row: BatchRow, work: Step) -> None:
        self._active[row.id] = Running()
        group.create_task(self._guarded(row, work))

    async def _guarded(self, row: BatchRow, work: Step) -> None:
        """One batch's step; its failure fails the batch, never the server."""
        try:
            await work
        except Unreachable as exc:  # the upstream is down: the batch waits, it does not fail
            log.warning("batch %s: %s; trying again in %g s", row.id, exc, UNREACHABLE_WAIT_S)
            self._not_before[row.id] = time.monotonic() + UNREACHABLE_WAIT_S
        except BatchrunError as exc:  # the job refused the batch, or the upstream refused us
            log.error("batch %s failed: %s", row.id, exc)
            self._fail(row.id, [{"code": "batch_failed", "message": str(exc), "line": None}])
        except Exception:  # (any other error of one batch is that batch's alone)
            log.exception("batch %s failed", row.id)
            message = "the batch's job failed on the server; see its log"
            self._fail(row.id, [{"code": "batch_failed", "message": message, "line": None}])
        finally:
            self._active.pop(row.id, None)
            self.poke()

    async def _step(self, row: BatchRow) -> None:
        if row.status == "validating":
            await self._validate(row)
        elif row.status == "in_progress":
            await self._run(row)
        elif row.status == "cancelling":
            await self._finish(row, "cancelled")
        else:
            await self._finish(row, "completed")

    async def _validate(self, row: BatchRow) -> None:
        served = await self._upstream.served()
        job = self._jobs.job(row.id, self._upstream.base_url, self._rates)
        rules = task_for(job, job_schema(job, {})).problem
        path = self._jobs.home(row.id) / "input.jsonl"
        checked = await asyncio.to_thread(check_file, path, row.endpoint, served, rules)
        if checked.errors:
            self._fail(row.id, checked.errors, total=checked.total)
            return
        self._state.update_batch(
            row.id, when="validating", status="in_progress", in_progress_at=now(),
            total=checked.total,
        )  # fmt: skip

    def _fail(self, batch_id: str, errors: list[dict[str, Any]], total: int = 0) -> None:
        body = orjson.dumps({"object": "list", "data": errors}).decode()
        counted: dict[str, Any] = {"total": total} if total else {}
        try:
            self._state.update_batch(
                batch_id, status="failed", failed_at=now(), errors=body, **counted
            )
        except Exception:  # (the state's disk, say: the batch keeps its status, for later)
            log.exception(
                "batch %s: cannot record that it failed; trying it again in %g s",
                batch_id, TICK_AFTER_ERROR_S,
            )  # fmt: skip
            self._not_before[batch_id] = time.monotonic() + TICK_AFTER_ERROR_S

    async def _run(self, row: BatchRow) -> None:
        running = self._active[row.id]
        job = self._jobs.job(row.id, self._upstream.base_url, self._rates)

        def started(stats: RunStats) -> None:
            counts = output_counts(self._jobs.home(row.id) / "output")
            running.base_ok, running.base_failed = counts[OK], counts[FAILED]
            running.stats = stats

        def stoppable(stop: Callable[[], None]) -> None:
            running.stop = stop
            if running.reason is not None:
                stop()

        options = RunOptions(
            progress=False, signals=False, on_start=stoppable, on_stats=started,
            pacers=None if self._pacing.team else self._pacing.pacer,
        )  # fmt: skip
        loop = asyncio.get_running_loop()  # the job in a thread and a loop of its own:
        work = run_job(job, options, io.StringIO())  # see fairslots
        await loop.run_in_executor(self._threads, asyncio.run, work)
        if running.reason == "shutdown":  # it resumes at the next start; its counts so far:
            completed, failed = running.counts()
            self._state.update_batch(row.id, completed=completed, failed=failed)
            return
        ending = {"cancel": "cancelled", "expire": "expired"}.get(running.reason or "")
        await self._finish(self._state.batch(row.id) or row, ending or "completed")

    async def _finish(self, row: BatchRow, final: str) -> None:
        """Write the batch's files and its final status (``completed`` goes through
        ``finalizing`` first; a cancel asked for meanwhile wins)."""
        if final == "completed" and row.status != "finalizing":
            finalizing: dict[str, Any] = {"status": "finalizing", "finalizing_at": now()}
            if not self._state.update_batch(row.id, when="in_progress", **finalizing):
                final = "cancelled"  # (asked for while the last answers were written)
        job = self._jobs.job(row.id, self._upstream.base_url, self._rates)
        files = await asyncio.to_thread(self._jobs.outputs, row, job, final == "expired")
        ended: dict[str, Any] = {"status": final, f"{final}_at": now()}
        self._state.update_batch(
            row.id, output_file_id=files.output_file_id, error_file_id=files.error_file_id,
            completed=files.completed, failed=files.failed, **ended,
        )  # fmt: skip
