"""What the ``batchrun serve`` tests share: an emulator and a server process for a block, the
``openai`` client pointed at it, batch files, and polling a batch to its end."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import openai
import orjson
from openai.types import Batch

from batchrun.bench.processes import Emulator, log_tail
from batchrun.bench.serving import Serve

CHAT, EMBED = "qwen3-32b-awq", "bge-m3"
ENDS = ("completed", "failed", "expired", "cancelled")


def config(base_url: str, scale: float, extra: str = "") -> str:
    """A serve.toml for an emulator whose limits are ``scale`` times the catalog's."""
    return (
        f'[endpoint]\nbase_url = "{base_url}"\n'
        f'[models."{CHAT}"]\nrps = {2 * scale}\n[models."{EMBED}"]\nrps = {7 * scale}\n'
        '[storage]\npath = "state"\n'
        "[run]\nbackoff_base_s = 0.05\nbackoff_max_s = 0.5\nserver_error_wait_s = 0.05\n"
        "grace_s = 1\n"
        f"{extra}\n"
    )


@contextlib.contextmanager
def served(
    workdir: Path, *, scale: float = 10.0, keys: tuple[str, ...] = ("key-a", "key-b"),
    extra: str = "", upstream_key: str | None = None,
) -> Iterator[tuple[Emulator, Serve]]:  # fmt: skip
    """An emulator (limits × ``scale``; taking only ``upstream_key`` if given: the serve
    child's SCIBOX_API_KEY is ``batchrun.bench.processes.TOKEN``) and a ``batchrun serve``."""
    with Emulator(workdir, rps_scale=scale, api_key=upstream_key) as emulator:  # noqa: SIM117
        with Serve(workdir, config(emulator.base_url, scale, extra), keys) as server:
            try:
                yield emulator, server
            except Exception as exc:  # (a refused connection: the server may have died)
                exc.add_note(f"the end of serve.log: {log_tail(server.log, 12)}")
                raise


def client(server: Serve, key: str = "key-a") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=30)


def chat_line(i: int, *, url: str = "/v1/chat/completions") -> dict[str, Any]:
    text = f"Item {i} was found on a shelf. It is number {i} of many. The shelf is old."
    body = {"model": CHAT, "messages": [{"role": "user", "content": text}], "max_tokens": 60}
    return {"custom_id": f"req-{i}", "method": "POST", "url": url, "body": body}


def embed_line(i: int) -> dict[str, Any]:
    body = {"model": EMBED, "input": f"passage {i} about rivers and hills"}
    return {"custom_id": f"emb-{i}", "method": "POST", "url": "/v1/embeddings", "body": body}


def batch_file(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


Endpoint = Literal["/v1/chat/completions", "/v1/embeddings"]


def submit(api: openai.OpenAI, path: Path, endpoint: Endpoint = "/v1/chat/completions") -> Batch:
    with path.open("rb") as source:
        uploaded = api.files.create(file=source, purpose="batch")
    return api.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,
        completion_window="24h",
    )


def wait_for(api: openai.OpenAI, batch_id: str, timeout_s: float = 60.0) -> Batch:
    """Poll a batch until it ends (or ``timeout_s`` passes: AssertionError)."""
    deadline = time.monotonic() + timeout_s
    while (batch := api.batches.retrieve(batch_id)).status not in ENDS:
        assert time.monotonic() < deadline, f"{batch_id} still {batch.status} after {timeout_s} s"
        time.sleep(0.2)
    return batch


def lines_of(api: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [orjson.loads(line) for line in api.files.content(file_id).content.splitlines()]
