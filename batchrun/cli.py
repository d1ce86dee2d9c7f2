"""The ``batchrun`` command: run, validate, status, emulator, models.

``main(argv) -> int`` returns the exit code; errors we expect become one clear line on stderr,
never a traceback. Which error gets which exit code is decided here (the numbers live in
``batchrun.errors``, where ``python -m batchrun`` finds them before this module loads)::

    0    every row ok
    1    the run finished but some rows failed (they are in the output with their error)
    2    bad job file, input or output (``JobError``, ``OutputError``)
    3    fatal service error: 401/403/404, endpoint unreachable (``FatalError``)
    130  interrupted: run the same command again to resume
    141  stdout was closed (``| head``): the run finished its work and saved its summary
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from batchrun.emulator import DEFAULT_HOST, DEFAULT_PORT, EmulatorConfig, serve
from batchrun.emulator.config import GATEWAYS
from batchrun.errors import (
    EXIT_BAD_JOB,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_ROWS_FAILED,
    BatchrunError,
    FatalError,
    JobError,
    OutputError,
    disk_full_said,
)
from batchrun.job.shards import Shard
from batchrun.job.spec import EndpointSpec, RunSpec, load_job
from batchrun.report.export import FORMATS, export
from batchrun.report.overview import status_lines, validate
from batchrun.runner import RunOptions, RunOutcome, run_job
from batchrun.service.endpoint import check_endpoint, open_endpoint
from batchrun.version import WRITTEN_BY

EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a process ended by SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except (JobError, OutputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_JOB
    except FatalError as exc:
        print(f"fatal: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except BatchrunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except BrokenPipeError:  # `batchrun run ... | head`: the reader left; the work is saved
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchrun", description="Run large batch LLM jobs on SciBox within its rate limits."
    )
    parser.add_argument("--version", action="version", version=WRITTEN_BY)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    _run_command(commands.add_parser("run", help="run or resume a job"))
    validate = commands.add_parser("validate", help="check a job and its input, print the plan")
    validate.add_argument("job")
    validate.set_defaults(handler=_validate)
    status = commands.add_parser("status", help="rows done / failed / left, from the output")
    status.add_argument("job")
    status.set_defaults(handler=_status)
    export_ = commands.add_parser(
        "export", help="write the output as OpenAI batch output, JSONL or CSV"
    )
    export_.add_argument("job")
    export_.add_argument("--format", choices=FORMATS, required=True, dest="format_name")
    export_.add_argument("--to", required=True, type=Path, help="directory to write into")
    export_.set_defaults(handler=_export)
    report = commands.add_parser("report", help="write an HTML report of the output's runs")
    report.add_argument("job")
    report.add_argument(
        "--to",
        type=Path,
        help="the HTML file, or a directory to hold report.html (default: OUTPUT.report.html,"
        " beside the output directory)",
    )
    report.set_defaults(handler=_report)
    _emulator_command(commands.add_parser("emulator", help="serve the local SciBox emulator"))
    from batchrun.serve.command import add_command  # (aiohttp's server: loaded for serve only)

    add_command(commands.add_parser("serve", help="serve OpenAI's Files and Batches API"))
    models = commands.add_parser("models", help="list the models the endpoint serves")
    models.add_argument("job", nargs="?", help="job file whose endpoint to ask (default: local)")
    models.set_defaults(handler=_models)
    return parser


def _run_command(run: argparse.ArgumentParser) -> None:
    run.add_argument("job", help="job file (.toml)")
    run.add_argument("--limit", type=_positive, help="do at most N rows of what is left")
    run.add_argument("--fresh", action="store_true", help="move the old output aside, start over")
    run.add_argument(
        "--retry-failed", action="store_true", help="send the rows written as failed again"
    )
    run.add_argument(
        "--redo",
        action="store_true",
        help="the prompt, model or params changed: redo every row in this output",
    )
    run.add_argument("--prune", action="store_true", help="remove the rows no longer in the input")
    run.add_argument(
        "--shard", metavar="I/N", help="do only the rows of shard I of N (one job, N processes)"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--metrics-port",
        type=int,
        metavar="P",
        help="serve Prometheus metrics on 127.0.0.1:P while the job runs",
    )
    run.set_defaults(handler=_run)


def _emulator_command(emulator: argparse.ArgumentParser) -> None:
    emulator.add_argument("--host", default=DEFAULT_HOST)
    emulator.add_argument("--port", type=int, default=DEFAULT_PORT)
    emulator.add_argument("--rps-scale", type=float, help="multiply every limit")
    emulator.add_argument(
        "--window-s",
        type=float,
        help="rate window in seconds: 1 = sliding (SciBox); other = fixed, on the wall clock",
    )
    emulator.add_argument(
        "--gateway",
        choices=GATEWAYS,
        help="answer as SciBox (none), vLLM with a reasoning parser, or LiteLLM Proxy",
    )
    emulator.add_argument(
        "--latency", dest="latency_s", metavar="LATENCY", type=float, help="seconds per answer"
    )
    emulator.add_argument("--fail-rate", type=float, help="share of 500/503")
    emulator.add_argument("--drop-rate", type=float, help="share of dropped conns")
    emulator.add_argument("--cut-stream-rate", type=float, help="share of cut streams")
    emulator.add_argument("--stall-rate", type=float, help="share of stalled streams")
    emulator.add_argument("--spike-rate", type=float, help="share of slow answers")
    emulator.add_argument("--spike-s", type=float, help="extra seconds of a spike")
    emulator.add_argument(
        "--invalid-json-rate",
        type=float,
        help="share of structured answers that are broken or violate the schema",
    )
    emulator.add_argument("--seed", type=int)
    emulator.add_argument(
        "--api-key-env", metavar="VAR", help="accept only the token held in this variable"
    )
    # Each flag's dest is the EmulatorConfig field it sets, and its default is the config's.
    emulator.set_defaults(handler=_emulator, **asdict(EmulatorConfig()))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _run(args: argparse.Namespace) -> int:
    shard = Shard.parse(args.shard) if args.shard else None
    if shard and args.prune:
        raise JobError("--prune needs the whole input: run it without --shard")
    job = load_job(args.job)
    # A run makes millions of short-lived, acyclic objects (rows, requests); the default
    # collector thresholds spend a sixth of a big embedding run scanning them (measured).
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    options = RunOptions(
        limit=args.limit,
        fresh=args.fresh,
        retry_failed=args.retry_failed,
        redo=args.redo,
        prune=args.prune,
        shard=shard,
        progress=not args.no_progress,
        metrics_port=args.metrics_port,
    )
    with disk_full_said(job.spec.output.path):  # the input index (the store says its own)
        return exit_code(asyncio.run(run_job(job, options)))


def exit_code(outcome: RunOutcome) -> int:
    if outcome.stdout_closed:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    if outcome.interrupted:
        print("interrupted: run the same command again to resume")
        return EXIT_INTERRUPTED
    return EXIT_ROWS_FAILED if outcome.failed_rows else EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    job = load_job(args.job)
    with disk_full_said(job.spec.output.path):  # the input index, the rows to do
        lines, fit = asyncio.run(validate(job))
    print("\n".join(lines))
    return EXIT_OK if fit else EXIT_BAD_JOB


def _export(args: argparse.Namespace) -> int:
    with disk_full_said(args.to):
        written = export(load_job(args.job), args.format_name, args.to)
    print(", ".join(f"{args.to / name}: {rows} rows" for name, rows in written.items()))
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from batchrun.report.html import write_report  # polars and matplotlib: a report's only

    print(f"wrote {write_report(load_job(args.job), args.to)}")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    job = load_job(args.job)
    with disk_full_said(job.spec.output.path):  # the input index, the rows to do
        print("\n".join(status_lines(job)))
    return EXIT_OK


def _emulator(args: argparse.Namespace) -> int:
    try:
        config = EmulatorConfig(
            rps_scale=args.rps_scale,
            window_s=args.window_s,
            gateway=args.gateway,
            latency_s=args.latency_s,
            fail_rate=args.fail_rate,
            drop_rate=args.drop_rate,
            cut_stream_rate=args.cut_stream_rate,
            stall_rate=args.stall_rate,
            spike_rate=args.spike_rate,
            spike_s=args.spike_s,
            invalid_json_rate=args.invalid_json_rate,
            seed=args.seed,
            api_key=os.environ.get(args.api_key_env) if args.api_key_env else None,
        )
    except ValueError as exc:
        raise JobError(f"emulator: {exc}") from None
    serve(config, host=args.host, port=args.port)
    return EXIT_OK


def _models(args: argparse.Namespace) -> int:
    endpoint, run = EndpointSpec(), RunSpec()
    if args.job:
        job = load_job(args.job)
        endpoint, run = job.spec.endpoint, job.spec.run

    async def listing() -> list[str]:
        async with open_endpoint(endpoint, run) as api:
            return await check_endpoint(api)

    print("\n".join(asyncio.run(listing())))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
