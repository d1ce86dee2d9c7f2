"""Options, the sections in table order, and how they run: the paced sections (they mostly
wait on a rate limit) side by side, each with its own emulator, then the CPU-bound ones alone
so they have both cores to themselves.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from batchrun.bench import baseline, paced, scale, serveapi, team, trace, wholerun, window
from batchrun.bench.table import Figure, Spec, failed, render
from batchrun.bench.workspace import QUICK, Sizes, Workspace

Measure = Callable[[Workspace], list[Figure]]


@dataclass(frozen=True)
class Section:
    """A part of the bench: the figures it measures and whether it waits on a rate limit."""

    name: str
    specs: tuple[Spec, ...]
    measure: Measure
    paced: bool


SECTIONS = (
    Section("chat", paced.chat_specs(), paced.chat_utilisation, paced=True),
    Section("embed", paced.EMBED_SPECS, paced.embeddings, paced=True),
    Section("lifted", scale.LIFTED_SPECS, scale.lifted, paced=False),
    Section("resume", scale.RESUME_SPECS, scale.resume, paced=False),
    Section("memory", scale.MEMORY_SPECS, scale.memory, paced=False),
    Section("trace", trace.SPECS, trace.trace, paced=False),
    Section("wholerun", wholerun.SPECS, wholerun.whole_run, paced=False),
    Section("baseline", baseline.SPECS, baseline.baseline, paced=True),
    Section("adaptive", paced.ADAPTIVE_SPECS, paced.adaptive, paced=True),
    Section("team", team.SPECS, team.team, paced=True),
    Section("window", window.SPECS, window.window, paced=True),
    Section("serve", serveapi.SPECS, serveapi.fair_share, paced=True),
    Section("servemem", serveapi.MEMORY_SPECS, serveapi.embeddings_memory, paced=False),
)
NAMES = tuple(section.name for section in SECTIONS)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    chosen = [s for s in SECTIONS if s.name in args.only] if args.only else list(SECTIONS)
    sizes = QUICK if args.quick else Sizes()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="batchrun-bench-") as root:
        workspace = Workspace(Path(root), sizes, started)
        results = measure(chosen, workspace)
    figures = [figure for section in chosen for figure in results[section.name]]
    elapsed = time.monotonic() - started
    print(render(figures, notes(args, elapsed)), flush=True)
    return 1 if any(figure.error for figure in figures) else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m batchrun.bench",
        description="Measure batchrun against the local emulator; print each figure, its "
        "target and the ratio (make bench).",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument(
        "--only",
        type=_names,
        default=(),
        metavar="NAME[,NAME]",
        help=f"run only these sections ({', '.join(NAMES)})",
    )
    return parser


def _names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown section {', '.join(unknown) or repr(text)}; choose from {', '.join(NAMES)}"
        )
    return names


def measure(sections: Sequence[Section], workspace: Workspace) -> dict[str, list[Figure]]:
    """Every section's figures: the paced ones side by side, then the others one by one."""
    side_by_side = [s for s in sections if s.paced]
    results: dict[str, list[Figure]] = {}
    if side_by_side:
        with ThreadPoolExecutor(len(side_by_side), thread_name_prefix="bench") as pool:
            futures = {s.name: pool.submit(_measured, s, workspace) for s in side_by_side}
            results = {name: future.result() for name, future in futures.items()}
    for section in sections:
        if not section.paced:
            results[section.name] = _measured(section, workspace)
    return results


def _measured(section: Section, workspace: Workspace) -> list[Figure]:
    """A section's figures; when it fails, its rows carry the error and the bench goes on."""
    began = time.monotonic()
    try:
        figures = section.measure(workspace)
    except Exception as exc:
        workspace.say(f"{section.name}: FAILED: {type(exc).__name__}: {exc}")
        return failed(section.specs, f"{type(exc).__name__}: {exc}")
    workspace.say(f"{section.name}: done in {time.monotonic() - began:.1f} s")
    return figures


def notes(args: argparse.Namespace, elapsed_s: float) -> list[str]:
    """The lines under the table, ending with the command that prints it."""
    options = (["--quick"] if args.quick else []) + (
        ["--only", ",".join(args.only)] * bool(args.only)
    )
    command = "make bench" + (f' ARGS="{" ".join(options)}"' if options else "")
    return [
        "ratio = measured ÷ target (a ≥ target is met at ≥ 1, a ≤ target at ≤ 1).",
        "[1] utilisation = admitted rate at the emulator, (accepted - 1) / (last - first "
        "admission), ÷ the model's limit; 429 share = throttled / (accepted + throttled).",
        "[2] lifted: emulator --rps-scale 1e6, job rps 1e6, no latency; rows/s by the run's "
        "wall time; CPU = the runner child's user + system time (os.wait4).",
        f"[3] convergence = seconds from the first admission to the end of the first cluster "
        f"of 429s (the first 429 after which no other 429 comes within {paced.QUIET_S:g} s).",
        "[4] team: job alpha in 1 process + job beta in 2 shards, each at the full 2 RPS, one "
        "emulator; one limit in a throwaway redis-server (BATCHRUN_LIMITS_URL), then without it.",
        "[5] window: emulator --window-s 60 --gateway litellm (LiteLLM's per-minute counting "
        "and headers); ideal = rows ÷ 2 RPS; rate = rows ok ÷ the slower shard's wall time.",
        "[6] serve: 3 batches through `batchrun serve` at 2 RPS; quota used as [1]; a batch's "
        "share = its lines answered from when all three had begun to when one was 95 % done.",
        f"sizes: {'--quick' if args.quick else 'default'}; bench wall time {elapsed_s:.0f} s "
        f"on {_cores()} cores",
        f"printed by: {command}",
    ]


def _cores() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
