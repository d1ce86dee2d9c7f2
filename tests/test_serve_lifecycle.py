"""``batchrun serve``'s batches to their other ends: cancelled, expired, resumed after a
SIGKILL, sharing the quota with another batch; bodies over the limits; keys never stored."""

from __future__ import annotations

import socket
import time
from collections import Counter
from pathlib import Path

import openai
import pytest

from batchrun.bench.processes import TOKEN, Emulator
from batchrun.bench.redisserver import RedisServer
from batchrun.bench.serving import Serve
from tests.servesupport import (
    CHAT,
    batch_file,
    chat_line,
    client,
    config,
    lines_of,
    served,
    submit,
    wait_for,
)


def _completed(api: openai.OpenAI, batch_id: str) -> int:
    counts = api.batches.retrieve(batch_id).request_counts
    return counts.completed if counts else 0


def _wait_until_completed(api: openai.OpenAI, batch_id: str, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while _completed(api, batch_id) < at_least:
        assert time.monotonic() < deadline, f"{batch_id}: fewer than {at_least} lines in 60 s"
        time.sleep(0.1)


def _ids(lines: list[dict[str, object]]) -> Counter[object]:
    return Counter(line["custom_id"] for line in lines)


def test_cancel_keeps_the_answered_lines(tmp_path: Path) -> None:
    with served(tmp_path, scale=1.0) as (_, server):
        api = client(server)
        batch = submit(api, batch_file(tmp_path / "c.jsonl", [chat_line(i) for i in range(40)]))
        _wait_until_completed(api, batch.id, 3)
        assert api.batches.cancel(batch.id).status in ("cancelling", "cancelled")
        done = wait_for(api, batch.id)
        assert done.status == "cancelled" and done.cancelling_at and done.cancelled_at
        answered = lines_of(api, done.output_file_id)
        assert done.request_counts is not None
        assert 3 <= len(answered) == done.request_counts.completed < 40
        assert max(_ids(answered).values()) == 1
        with pytest.raises(openai.ConflictError):
            api.batches.cancel(batch.id)


def test_a_batch_past_its_window_expires_with_the_rest_as_batch_expired(tmp_path: Path) -> None:
    with served(tmp_path, scale=1.0, extra="[batches]\nwindow_s = 3") as (_, server):
        api = client(server)
        batch = submit(api, batch_file(tmp_path / "e.jsonl", [chat_line(i) for i in range(40)]))
        done = wait_for(api, batch.id)
        assert done.status == "expired" and done.expired_at, done
        answered, errors = lines_of(api, done.output_file_id), lines_of(api, done.error_file_id)
        assert answered and errors
        assert _ids(answered + errors) == Counter(f"req-{i}" for i in range(40))
        assert {line["error"]["code"] for line in errors} == {"batch_expired"}
        assert all(line["response"] is None for line in errors)


@pytest.mark.serial  # real time: signals, or rates measured
def test_sigkill_mid_batch_then_restart_completes_each_line_once(tmp_path: Path) -> None:
    with served(tmp_path, scale=5.0, upstream_key=TOKEN) as (emulator, server):
        api = client(server)
        batch = submit(api, batch_file(tmp_path / "k.jsonl", [chat_line(i) for i in range(60)]))
        _wait_until_completed(api, batch.id, 15)
        server.kill()
        server.start()
        done = wait_for(client(server), batch.id)
        assert done.status == "completed", done
        lines = lines_of(client(server), done.output_file_id)
        assert _ids(lines) == Counter(f"req-{i}" for i in range(60))
        # The restarted server cannot know the killed one's last slots, still in the
        # emulator's 1-s window: its first request may meet one 429 (retried, not lost).
        assert emulator.seen(CHAT).throttled <= 1
    assert server.returncode == 0  # (SIGTERM: a clean stop)
    assert "Traceback" not in server.log.read_text()
    _never_written(tmp_path, (TOKEN, "key-a", "key-b"))


def _never_written(root: Path, secrets: tuple[str, ...]) -> None:
    """No file under ``root`` (the state, the logs) holds any of ``secrets``."""
    for path in root.rglob("*"):
        if path.is_file() and path.name != "serve.toml":
            data = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in data, f"{secret!r} written in {path}"


@pytest.mark.serial  # real time: signals, or rates measured
def test_two_batches_at_once_share_the_quota(tmp_path: Path) -> None:
    # 10 RPS: a timer late by a few ms on a busy machine loses that much of a 0.1 s slot
    # (the pacer does not catch up), a larger share of a faster rate's.
    with served(tmp_path, scale=5.0) as (emulator, server):
        api = client(server)
        first = submit(api, batch_file(tmp_path / "1.jsonl", [chat_line(i) for i in range(60)]))
        second = submit(api, batch_file(tmp_path / "2.jsonl", [chat_line(i) for i in range(60)]))
        ids = (first.id, second.id)
        while all(api.batches.retrieve(b).status != "completed" for b in ids):
            time.sleep(0.2)
        assert min(_completed(api, b) for b in ids) >= 48  # neither waited for the other
        for batch_id in ids:
            assert wait_for(api, batch_id).status == "completed"
        seen = emulator.seen(CHAT)
    assert seen.throttled == 0
    assert seen.admitted_rate >= 0.95 * 2 * 5.0, seen


def test_bodies_over_the_limits_get_413(tmp_path: Path) -> None:
    extra = "[batches]\nmax_file_mb = 0.001\nmax_body_mb = 0.001"
    with served(tmp_path, scale=1.0, extra=extra) as (_, server):
        api = client(server)
        big = batch_file(tmp_path / "big.jsonl", [chat_line(i) for i in range(30)])
        with pytest.raises(openai.APIStatusError) as upload, big.open("rb") as source:
            api.files.create(file=source, purpose="batch")
        assert upload.value.status_code == 413
        with pytest.raises(openai.APIStatusError) as body:
            api.chat.completions.create(
                model=CHAT, messages=[{"role": "user", "content": "x" * 5_000}]
            )
        assert body.value.status_code == 413
        assert not list((tmp_path / "state" / "files").iterdir())


@pytest.mark.serial  # real time: signals, or rates measured
def test_two_servers_share_one_quota_through_limits_shared(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    shared = f'[limits]\nshared = "{redis_server.url}"'
    with Emulator(tmp_path, rps_scale=5.0) as emulator:
        text = config(emulator.base_url, 5.0, shared)
        (tmp_path / "one").mkdir()
        (tmp_path / "two").mkdir()
        with (
            Serve(tmp_path / "one", text, ("k",)) as one,
            Serve(tmp_path / "two", text, ("k",)) as two,
        ):
            apis = [client(one, "k"), client(two, "k")]
            path = batch_file(tmp_path / "s.jsonl", [chat_line(i) for i in range(50)])
            ids = [submit(api, path).id for api in apis]
            done = [wait_for(api, batch_id) for api, batch_id in zip(apis, ids, strict=True)]
        seen = emulator.seen(CHAT)
    assert [batch.status for batch in done] == ["completed", "completed"]
    # Two processes' timers jitter on a busy machine: a rare 429 (1 of 101 measured while
    # a bench ran beside it), retried, and the rate that 429 cut climbs back slowly (0.83 of
    # the limit measured then); without the shared limit each would send at the full 10 RPS.
    assert seen.throttled_share <= 0.02 and seen.accepted == 100
    assert seen.admitted_rate >= 0.8 * 2 * 5.0, seen


def test_an_unreachable_upstream_leaves_the_batch_in_progress(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    text = config(f"http://127.0.0.1:{closed}/v1", 1.0)
    with Serve(tmp_path, text, ("k",)) as server:
        api = client(server, "k")
        batch = submit(api, batch_file(tmp_path / "u.jsonl", [chat_line(0)]))
        deadline = time.monotonic() + 30
        while "trying again" not in server.log.read_text():
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.1)
        waiting = api.batches.retrieve(batch.id)
        assert waiting.status == "in_progress" and waiting.errors is None
