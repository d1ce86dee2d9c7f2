"""Live metrics of a run: ``batchrun run --metrics-port P`` serves Prometheus metrics on
127.0.0.1 while the job runs (the ``prometheus_client`` library). They are read from the run's
own counters (``RunStats``, ``Progress``) when scraped: nothing is counted twice.

- ``batchrun_requests_total{model}``, ``batchrun_answers_total{model}``,
  ``batchrun_request_errors_total{model,status}`` (429, 5xx, "no answer", ...),
  ``batchrun_reasks_total{model}``
- ``batchrun_rows_total{status}`` (ok, failed, skipped: already done)
- ``batchrun_tokens_total{model,direction}`` (in, out)
- ``batchrun_in_flight``, ``batchrun_pacing_rate_rps{model}``, ``batchrun_eta_seconds``,
  ``batchrun_rows_left``
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from batchrun.errors import JobError
from batchrun.output.rows import FAILED, OK
from batchrun.send.progress import Progress
from batchrun.send.stats import RunStats

HOST = "127.0.0.1"


class RunCollector(Collector):
    """The run's counters as Prometheus metrics, read at each scrape."""

    def __init__(self, stats: RunStats, progress: Progress) -> None:
        self._stats, self._progress = stats, progress

    def collect(self) -> Iterable[Metric]:
        stats = self._stats
        requests = CounterMetricFamily("batchrun_requests", "Requests sent", labels=["model"])
        answers = CounterMetricFamily("batchrun_answers", "Requests answered", labels=["model"])
        errors = CounterMetricFamily(
            "batchrun_request_errors", "Requests not answered", labels=["model", "status"]
        )
        reasks = CounterMetricFamily(
            "batchrun_reasks", "Invalid answers asked again", labels=["model"]
        )
        tokens = CounterMetricFamily("batchrun_tokens", "Tokens", labels=["model", "direction"])
        rate = GaugeMetricFamily("batchrun_pacing_rate_rps", "Pacing rate", labels=["model"])
        for name, model in list(stats.models.items()):
            requests.add_metric([name], model.requests)
            answers.add_metric([name], model.answered)
            reasks.add_metric([name], model.reasks)
            for status, count in list(model.errors.items()):
                errors.add_metric([name, status], count)
            tokens.add_metric([name, "in"], model.prompt_tokens)
            tokens.add_metric([name, "out"], model.completion_tokens)
            if model.rate is not None:
                rate.add_metric([name], model.rate)
        yield from (requests, answers, errors, reasks, tokens, rate)
        yield from self._run_metrics()

    def _run_metrics(self) -> Iterator[Metric]:
        stats, progress = self._stats, self._progress
        rows = CounterMetricFamily("batchrun_rows", "Rows written", labels=["status"])
        rows.add_metric([OK], stats.rows_ok)
        rows.add_metric([FAILED], stats.rows_failed)
        rows.add_metric(["skipped"], stats.rows_skipped)
        yield rows
        yield GaugeMetricFamily("batchrun_in_flight", "Requests in flight", stats.in_flight)
        left = GaugeMetricFamily(
            "batchrun_rows_left", "Rows left to do", progress.total - progress.done
        )
        yield left
        eta = progress.eta_s()
        if eta is not None:
            yield GaugeMetricFamily("batchrun_eta_seconds", "Seconds left at the run's rate", eta)


def check_port(port: int | None) -> None:
    """JobError unless ``port`` can serve the metrics (asked before the run starts)."""
    if port is None:
        return
    if not 0 < port < 65536:
        raise JobError(f"--metrics-port {port}: give a port between 1 and 65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise _unavailable(port, exc) from None


def _unavailable(port: int, error: OSError) -> JobError:
    reason = error.strerror or error
    return JobError(f"--metrics-port {port}: cannot listen on {HOST}:{port} ({reason})")


@contextlib.contextmanager
def served_metrics(port: int | None, stats: RunStats, progress: Progress) -> Iterator[None]:
    """Serve the run's metrics on 127.0.0.1:``port`` for the block (nothing when None)."""
    if port is None:
        yield
        return
    registry = CollectorRegistry()
    registry.register(RunCollector(stats, progress))
    try:
        server, thread = start_http_server(port, addr=HOST, registry=registry)
    except OSError as exc:
        raise _unavailable(port, exc) from None
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
