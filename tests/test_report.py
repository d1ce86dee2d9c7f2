"""Seeing a long run: the trace of every attempt, the HTML report (opened in headless Chromium),
live Prometheus metrics, tokens and cost."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from batchrun.bench.processes import Emulator
from batchrun.bench.redisserver import free_port
from batchrun.emulator import EmulatorConfig, running_emulator
from batchrun.job.spec import load_job
from batchrun.output.done import output_counts
from batchrun.output.events import read_events
from batchrun.output.layout import OutputLayout
from batchrun.report.html import write_report
from batchrun.report.overview import validate_lines
from batchrun.runner import RunOptions, run_job
from tests.support import THINKER, batchrun, finish, news_rows, write_jsonl

PRICING = f'[pricing."{THINKER}"]\ninput_per_mtok = 0.5\noutput_per_mtok = 2.0\n'


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIBOX_API_KEY", "test-token")


def job_file(base_url: str, rows: int, run: str = "") -> Path:
    write_jsonl(Path("news.jsonl"), news_rows(rows))
    path = Path("job.toml")
    path.write_text(
        f'kind = "chat"\nmodel = "{THINKER}"\n[endpoint]\nbase_url = "{base_url}"\n'
        '[input]\npath = "news.jsonl"\n'
        '[prompt]\nsystem = "/no_think Be brief."\nuser = "Summarise:\\n\\n{text}"\n'
        "[params]\nmax_tokens = 80\n"
        '[output]\npath = "out"\n'
        f"[run]\nbackoff_base_s = 0.05\nserver_error_wait_s = 0.05\n{run}\n"
        f'[models."{THINKER}"]\nrps = 100\n{PRICING}',
        encoding="utf-8",
    )
    return path


async def test_a_faulty_run_is_traced_and_reported_with_its_counts() -> None:
    config = EmulatorConfig(rps_scale=60, fail_rate=0.2, seed=3)
    async with running_emulator(config) as url:
        job = load_job(job_file(url, 60, run="max_attempts = 2"))
        out = io.StringIO()
        await run_job(job, RunOptions(progress=False), out)

    summary = orjson.loads(OutputLayout(Path("out")).summary().read_bytes())
    model = summary["models"][THINKER]
    events = read_events(Path("out"))
    assert events.height == model["requests"]  # every attempt traced
    assert (events["outcome"] == "ok").sum() == model["answered"]
    assert events["prompt_tokens"].sum() == model["prompt_tokens"]
    expected_cost = (model["prompt_tokens"] * 0.5 + model["completion_tokens"] * 2.0) / 1e6
    assert model["cost"] == pytest.approx(expected_cost)
    assert f"cost {expected_cost:.4f}" in out.getvalue()

    page = write_report(job).read_text(encoding="utf-8")

    counts = output_counts(Path("out"))
    assert counts["failed"] > 0 and page.count("<svg") >= 4
    assert f"<b>{counts['ok']:,}</b> rows ok, <b>{counts['failed']:,}</b> failed" in page
    failed_rows = sum(
        int(n) for n in re.findall(r"<tr><td>gave up after 2 attempts[^<]*</td><td>(\d+)", page)
    )
    assert failed_rows == counts["failed"]
    assert "<script" not in page and "http://" not in page.split("<svg")[0]


def test_the_report_opens_in_headless_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run and `make test` install it with apt)")
    job = load_job(job_file("local", 8))
    code, _, err = finish(batchrun("run", "job.toml", "--no-progress"))
    assert code == 0, err
    page = write_report(job, Path("report.html"))
    shot = tmp_path / "shot.png"

    browser = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1000,1600", f"--screenshot={shot}", "--enable-logging=stderr",
         "--v=0", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    console = [line for line in browser.stderr.splitlines() if "CONSOLE" in line]
    assert shot.exists(), browser.stderr[-2000:]
    assert not console, console
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.std() > 0.05, "the screenshot is blank"


@pytest.mark.serial
def test_the_metrics_port_serves_counters_that_rise(emulator_dir: Path) -> None:
    port = free_port()
    with Emulator(emulator_dir, rps_scale=5) as emulator:
        job_file(emulator.base_url, 40).write_text(
            Path("job.toml").read_text().replace("rps = 100", "rps = 10")
        )
        run = batchrun("run", "job.toml", "--no-progress", "--metrics-port", str(port))
        first = _scrape(port, lambda text: _requests(text) > 0)
        time.sleep(1.0)
        second = _scrape(port, lambda text: True)
        code, _, err = finish(run)

    assert code == 0, err
    assert _requests(second) > _requests(first) > 0
    assert 'batchrun_rows_total{status="ok"}' in second and "batchrun_eta_seconds" in second
    assert f'batchrun_pacing_rate_rps{{model="{THINKER}"}}' in second


def _requests(text: str) -> float:
    found = re.search(rf'batchrun_requests_total{{model="{THINKER}"}} ([\d.e+]+)', text)
    return float(found.group(1)) if found else 0.0


def _scrape(port: int, ready: object) -> str:
    """The metrics page, once the run serves it and ``ready(text)`` holds."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                text: str = reply.read().decode()
            if callable(ready) and ready(text):
                return text
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("the metrics port never answered")


def test_validate_estimates_tokens_and_cost_of_what_is_left() -> None:
    job = load_job(job_file("local", 30))

    lines, fit = validate_lines(job)

    estimate = next(line for line in lines if line.startswith("estimate:"))
    assert fit and "tokens in (characters / 3, from 30 rows to do)" in estimate
    assert "at most 2,400 out (max_tokens)" in estimate and "cost at most" in estimate
