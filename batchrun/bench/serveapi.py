"""Sections ``serve`` and ``servemem`` (issue 26): ``batchrun serve`` driven by the ``openai``
client against the emulator.

- ``serve``: three batches of chat lines submitted at once at the model's built-in limit
  (qwen3-32b-awq, 2 RPS): the quota used (the emulator's admitted rate ÷ the limit), each
  batch's share of the lines answered while all three ran (from the live ``request_counts``),
  and the 429s.
- ``servemem``: one embeddings file of 50,000 lines uploaded and run to ``completed`` with
  the limit lifted; the server's peak RSS (``os.wait4`` when it exits: its batches' jobs run
  inside it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openai
import orjson

from batchrun.bench.processes import BenchError, Emulator
from batchrun.bench.serving import Serve
from batchrun.bench.table import Figure, Spec
from batchrun.bench.workspace import Workspace
from batchrun.job.catalog import MODELS

CHAT, EMBED = "qwen3-32b-awq", "bge-m3"
BATCHES = 3
LIFTED = 1e6
KEY = "bench-client-key"

SPECS = (
    Spec(f"serve [6]: {BATCHES} chat batches at once: quota used", "", 0.95),
    Spec("  each batch's share: largest distance from a third", "%", 10.0, at_most=True),
    Spec("  429s", "", 0.0, at_most=True),
)
MEMORY_SPECS = (Spec("serve: 50,000-line embeddings batch, server peak RSS", "MB", 400.0, True),)


def _config(base_url: str, rps: dict[str, float]) -> str:
    models = "".join(f'[models."{name}"]\nrps = {value:g}\n' for name, value in rps.items())
    return f'[endpoint]\nbase_url = "{base_url}"\n{models}[storage]\npath = "state"\n'


def _lines(path: Path, count: int, embeddings: bool) -> Path:
    with path.open("wb") as sink:
        for i in range(count):
            body: dict[str, Any]
            if embeddings:
                url, body = "/v1/embeddings", {"model": EMBED, "input": f"passage {i} on hills"}
            else:
                text = f"Note {i}. The river rose in spring. The mill stopped."
                url = "/v1/chat/completions"
                body = {"model": CHAT, "messages": [{"role": "user", "content": text}]}
            line = {"custom_id": f"line-{i}", "method": "POST", "url": url, "body": body}
            sink.write(orjson.dumps(line) + b"\n")
    return path


def _submit(api: openai.OpenAI, path: Path, endpoint: str) -> str:
    with path.open("rb") as source:
        uploaded = api.files.create(file=source, purpose="batch")
    return api.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    ).id


def _counts(api: openai.OpenAI, ids: list[str]) -> tuple[list[str], list[int]]:
    batches = [api.batches.retrieve(batch_id) for batch_id in ids]
    done = [b.request_counts.completed if b.request_counts else 0 for b in batches]
    return [b.status for b in batches], done


def fair_share(workspace: Workspace) -> list[Figure]:
    workdir = workspace.directory("serve")
    lines = workspace.sizes.serve_chat_lines
    path = _lines(workdir / "chat.jsonl", lines, embeddings=False)
    with (
        Emulator(workdir) as emulator,
        Serve(workdir, _config(emulator.base_url, {}), (KEY,)) as server,
    ):
        api = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=2)
        ids = [_submit(api, path, "/v1/chat/completions") for _ in range(BATCHES)]
        start, end = _shares_window(api, ids, lines)
        while any(status != "completed" for status in _counts(api, ids)[0]):
            time.sleep(1.0)
        seen = emulator.seen(CHAT)
    got = [b - a for a, b in zip(start, end, strict=True)]
    distance = max(abs(g / max(sum(got), 1) * BATCHES - 1) for g in got) * 100
    used = seen.admitted_rate / MODELS[CHAT].rps
    note = f"lines answered while all ran: {'/'.join(map(str, got))}"
    return [
        Figure(SPECS[0], used, f"{seen.accepted} requests admitted"),
        Figure(SPECS[1], distance, note),
        Figure(SPECS[2], seen.throttled),
    ]


def _shares_window(api: openai.OpenAI, ids: list[str], lines: int) -> tuple[list[int], list[int]]:
    """Counts when every batch has begun, and when the first is nearly done."""
    deadline = time.monotonic() + 60 * 60
    start: list[int] | None = None
    while time.monotonic() < deadline:
        statuses, done = _counts(api, ids)
        if start is None and all(count > 0 for count in done):
            start = done
        if start is not None and max(done) >= lines * 0.95:
            return start, done
        if any(status in ("failed", "expired", "cancelled") for status in statuses):
            raise BenchError(f"a batch ended {statuses}")
        time.sleep(0.5)
    raise BenchError("the batches did not finish within an hour")


def embeddings_memory(workspace: Workspace) -> list[Figure]:
    workdir = workspace.directory("servemem")
    lines = workspace.sizes.serve_embed_lines
    path = _lines(workdir / "embed.jsonl", lines, embeddings=True)
    with Emulator(workdir, rps_scale=LIFTED) as emulator:
        server = Serve(workdir, _config(emulator.base_url, {EMBED: LIFTED}), (KEY,))
        with server:
            api = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=2)
            began = time.monotonic()
            batch_id = _submit(api, path, "/v1/embeddings")
            while (batch := api.batches.retrieve(batch_id)).status != "completed":
                if batch.status in ("failed", "expired", "cancelled"):
                    raise BenchError(f"the embeddings batch ended {batch.status}: {batch.errors}")
                time.sleep(1.0)
            took = time.monotonic() - began
            counts = batch.request_counts
        if counts is None or counts.completed != lines:
            raise BenchError(f"{counts} of {lines} lines answered")
    note = f"{lines:,} lines in {took:.0f} s (upload to completed)"
    return [Figure(MEMORY_SPECS[0], server.peak_rss_mb, note)]
