"""``GET /metrics``: the running batches' counters in Prometheus' text format, labelled by batch
(the same names as ``batchrun run --metrics-port``, read from each job's ``RunStats`` when
scraped), and the number of batches running."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from batchrun.output.rows import FAILED, OK
from batchrun.send.stats import RunStats


class Live(Protocol):
    stats: RunStats | None

    def counts(self) -> tuple[int, int]: ...


class BatchesCollector(Collector):
    def __init__(self, running: Mapping[str, Live]) -> None:
        self._running = running

    def collect(self) -> Iterable[Metric]:
        by = ["batch", "model"]
        requests = CounterMetricFamily("batchrun_requests", "Requests sent", labels=by)
        answers = CounterMetricFamily("batchrun_answers", "Requests answered", labels=by)
        throttled = CounterMetricFamily("batchrun_throttled", "429 answers", labels=by)
        tokens = CounterMetricFamily("batchrun_tokens", "Tokens", labels=[*by, "direction"])
        rows = CounterMetricFamily("batchrun_rows", "Lines answered", labels=["batch", "status"])
        in_flight = GaugeMetricFamily("batchrun_in_flight", "Requests in flight", labels=["batch"])
        for batch, live in list(self._running.items()):
            completed, failed = live.counts()
            rows.add_metric([batch, OK], completed)
            rows.add_metric([batch, FAILED], failed)
            if live.stats is None:
                continue
            in_flight.add_metric([batch], live.stats.in_flight)
            for name, model in list(live.stats.models.items()):
                requests.add_metric([batch, name], model.requests)
                answers.add_metric([batch, name], model.answered)
                throttled.add_metric([batch, name], model.throttled)
                tokens.add_metric([batch, name, "in"], model.prompt_tokens)
                tokens.add_metric([batch, name, "out"], model.completion_tokens)
        yield from (requests, answers, throttled, tokens, rows, in_flight)
        yield GaugeMetricFamily(
            "batchrun_serve_batches_running", "Batches whose job runs now", len(self._running)
        )


def metrics_text(running: Mapping[str, Live]) -> bytes:
    registry = CollectorRegistry()
    registry.register(BatchesCollector(running))
    return generate_latest(registry)
