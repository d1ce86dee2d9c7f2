"""``batchrun report``: one self-contained HTML page about a job's output, every run and shard
included. Plots are matplotlib figures inlined as SVG (no script, no network needed to view
it); the tables come from the output itself (rows, errors), the runs' records (``_run-*.json``)
and their traces (``_events-*.arrows``, ``batchrun.output.events``).
"""

from __future__ import annotations

import html
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from batchrun.errors import JobError, OutputError, cannot_write
from batchrun.job.spec import Job
from batchrun.output.done import output_counts
from batchrun.output.events import ANSWERED, read_events
from batchrun.output.layout import OutputLayout, read_json
from batchrun.output.rows import FAILED, OK

TOP_ERRORS = 10
RUN_COLUMNS = ["run", "rows ok", "failed", "already done", "wall", "settled rate"]
BINS = 120
"""Time bins across the whole trace, for the plots over time."""
Figure = Any  # matplotlib.figure.Figure: matplotlib is imported only when a report is made


def write_report(job: Job, to: Path | None = None) -> Path:
    """Write the report of ``job``'s output to ``to`` (default: ``<output>.report.html``
    beside the output directory); return where."""
    output = Path(job.spec.output.path)
    layout = OutputLayout(output)
    if not layout.parts() and not layout.run_records():
        raise JobError(f"{output}: no output yet: run the job first")
    target = _target(to, output)
    events = read_events(output)
    runs = [run for path in layout.run_records() if (run := read_json(path))]
    limits = {m: r for run in runs for m, r in run.get("limits", {}).items()} | job.rps
    plots = _plots(events, runs, limits)
    page = _page(job, output, events, runs, plots)
    try:
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise cannot_write(target, exc) from None
    return target


def _target(to: Path | None, output: Path) -> Path:
    """Where the report goes: ``--to`` (a file, or a directory to hold ``report.html``), by
    default ``<output>.report.html`` beside the output directory; checked before the report
    is made."""
    if to is None:
        return OutputLayout(output).report
    if to.is_dir():
        return to / "report.html"
    if not to.parent.is_dir():
        raise OutputError(
            f"--to {to}: the directory {to.parent} does not exist; create it, or give a file "
            "in a directory that exists"
        )
    return to


def _plots(events: pl.DataFrame, runs: list[dict[str, Any]], limits: dict[str, float]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    binned = _binned(events)
    makers: list[Callable[[], Figure]] = [
        lambda: _rate_plot(binned, limits),
        lambda: _latency_plot(binned),
        lambda: _trouble_plot(binned),
        lambda: _tokens_plot(events),
        lambda: _eta_plot(runs),
    ]
    return [_svg(make()) for make in makers]


def _binned(events: pl.DataFrame) -> pl.DataFrame:
    """The trace with each attempt's time bin (minutes since the first attempt) and width."""
    if events.is_empty():
        return events.with_columns(minute=pl.lit(0.0), width_s=pl.lit(1.0))
    start, end = events["sent_at"].min(), events["sent_at"].max()
    assert isinstance(start, float) and isinstance(end, float)
    width = max((end - start) / BINS, 1.0)
    return events.with_columns(
        minute=((pl.col("sent_at") - start) // width * width / 60.0), width_s=pl.lit(width)
    )


def _axes(title: str, ylabel: str) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure as MplFigure

    figure = MplFigure(figsize=(9, 3.2), layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title, loc="left", fontsize=11)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    return figure, axes


def _rate_plot(binned: pl.DataFrame, limits: dict[str, float]) -> Figure:
    figure, axes = _axes("Requests sent per second, by model, against its limit", "requests/s")
    per_bin = binned.group_by("model", "minute", "width_s").len().sort("minute")
    for (model,), rows in per_bin.group_by("model", maintain_order=True):
        line = axes.plot(rows["minute"], rows["len"] / rows["width_s"], label=str(model))
        if model in limits:
            axes.axhline(limits[str(model)], linestyle="--", color=line[0].get_color(), alpha=0.6)
    return _finished(figure, axes, "minutes since the first request (dashed: the limit)")


def _latency_plot(binned: pl.DataFrame) -> Figure:
    figure, axes = _axes("Answer latency", "seconds")
    answered = binned.filter(pl.col("outcome") == ANSWERED)
    quantiles = (
        answered.group_by("minute")
        .agg(
            p50=pl.col("latency_ms").quantile(0.5) / 1000,
            p95=pl.col("latency_ms").quantile(0.95) / 1000,
        )
        .sort("minute")
    )
    axes.plot(quantiles["minute"], quantiles["p95"], label="p95", marker=".")
    axes.plot(quantiles["minute"], quantiles["p50"], label="p50", marker=".")
    return _finished(figure, axes, "minutes since the first request")


def _trouble_plot(binned: pl.DataFrame) -> Figure:
    figure, axes = _axes("Retries, 429s and server errors", "attempts per bin")
    kinds = {
        "retries": pl.col("attempt") > 1,
        "429": pl.col("outcome") == "429",
        "5xx": pl.col("outcome").str.starts_with("5"),
        "no answer": pl.col("outcome") == "no answer",
    }
    counts = binned.group_by("minute").agg(**{k: e.sum() for k, e in kinds.items()}).sort("minute")
    for kind in kinds:
        axes.plot(counts["minute"], counts[kind], label=kind)
    return _finished(figure, axes, "minutes since the first request")


def _tokens_plot(events: pl.DataFrame) -> Figure:
    figure, axes = _axes("Tokens by model", "tokens")
    totals = _tokens_by_model(events)
    positions = range(totals.height)
    axes.bar([p - 0.2 for p in positions], totals["in"], width=0.4, label="in")
    axes.bar([p + 0.2 for p in positions], totals["out"], width=0.4, label="out")
    axes.set_xticks(list(positions), totals["model"].to_list())
    _legend(axes)
    return figure


def _eta_plot(runs: list[dict[str, Any]]) -> Figure:
    figure, axes = _axes("ETA during each run", "minutes left")
    for run in runs:
        history = [(t, eta) for t, _, eta in run.get("eta_history", []) if eta is not None]
        if history:
            axes.plot(
                [t / 60 for t, _ in history],
                [eta / 60 for _, eta in history],
                label=str(run.get("run", "")),
            )
    axes.set_xlabel("minutes since the run started (a point every 30 s)")
    _legend(axes)
    return figure


def _finished(figure: Figure, axes: Any, xlabel: str) -> Figure:
    """A plot over time, labelled, from zero up, with its legend."""
    axes.set_xlabel(xlabel)
    axes.set_ylim(bottom=0)
    _legend(axes)
    return figure


def _legend(axes: Any) -> None:
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, loc="upper right")


def _tokens_by_model(events: pl.DataFrame) -> pl.DataFrame:
    """``model``, ``in``, ``out``: the tokens of every traced attempt."""
    return (
        events.group_by("model")
        .agg(
            pl.col("prompt_tokens").sum().alias("in"),
            pl.col("completion_tokens").sum().alias("out"),
        )
        .sort("model")
    )


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _page(
    job: Job, output: Path, events: pl.DataFrame, runs: list[dict[str, Any]], plots: list[str]
) -> str:
    counts = output_counts(output)
    sections = [
        f"<h1>batchrun report: {_e(job.name)}</h1>",
        f"<p>Output <code>{_e(str(output))}</code>, made {time.strftime('%Y-%m-%d %H:%M')}: "
        f"<b>{counts[OK]:,}</b> rows ok, <b>{counts[FAILED]:,}</b> failed; "
        f"{events.height:,} request attempts in {len(runs)} runs.</p>",
        "<h2>Over time</h2>",
        *(f"<figure>{plot}</figure>" for plot in plots[:3]),
        "<h2>Tokens and cost</h2>",
        f"<figure>{plots[3]}</figure>",
        _table(["model", "tokens in", "tokens out", "cost"], _cost_rows(job, events)),
        "<h2>Top errors</h2>",
        _table(["error", "rows", "e.g. ids"], _error_rows(output)),
        "<h2>Runs</h2>",
        f"<figure>{plots[4]}</figure>",
        _table(
            ["run", "rows ok", "failed", "already done", "wall", "settled rate"], _run_rows(runs)
        ),
    ]
    return _HTML.format(title=_e(job.name), body="\n".join(sections))


def _cost_rows(job: Job, events: pl.DataFrame) -> list[list[str]]:
    totals = _tokens_by_model(events)
    rows = []
    for model, tokens_in, tokens_out in totals.iter_rows():
        price = job.prices.get(model)
        cost = (tokens_in * price[0] + tokens_out * price[1]) / 1e6 if price else None
        shown = f"{cost:.4f}" if cost is not None else "no [pricing] for it"
        rows.append([model, f"{tokens_in:,}", f"{tokens_out:,}", shown])
    return rows


def _error_rows(output: Path) -> list[list[str]]:
    parts = [str(part) for part in OutputLayout(output).parts()]
    if not parts:
        return []
    failed = pl.scan_parquet(parts).filter(pl.col("status") == FAILED).select("id", "error")
    top = (
        failed.group_by("error")
        .agg(pl.len().alias("rows"), pl.col("id").head(3).alias("ids"))
        .sort("rows", descending=True)
        .head(TOP_ERRORS)
        .collect()
    )
    return [[str(e), f"{n:,}", ", ".join(ids)] for e, n, ids in top.iter_rows()]


def _run_rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for run in runs:
        rates = ", ".join(
            f"{m}: {v['paced_rps']} rps"
            for m, v in run.get("models", {}).items()
            if v.get("paced_rps")
        )
        rows.append(
            [
                str(run.get("run")),
                f"{run.get('rows_ok', 0):,}",
                f"{run.get('rows_failed', 0):,}",
                f"{run.get('rows_skipped_done', 0):,}",
                f"{run.get('wall_s', 0):.0f} s",
                rates,
            ]
        )
    return rows


def _table(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p><i>none</i></p>"
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _e(text: str) -> str:
    return html.escape(text)


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>batchrun: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 960px; color: #222; }}
figure {{ margin: 1em 0; }} svg {{ max-width: 100%; height: auto; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.3em 0.8em; text-align: left; }}
code {{ background: #f4f4f4; padding: 0 0.2em; }}
</style></head><body>
{body}
</body></html>
"""
