"""Installs that repeat: the lock files pin every dependency pyproject.toml names, and the
wheel holds the package and its emulator (not the bench, not the tests) and runs a job in a
fresh virtual environment, outside the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from batchrun.output.layout import OutputLayout
from batchrun.version import VERSION
from tests.support import news_rows, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
RUN_LOCK, DEV_LOCK = ROOT / "requirements/runtime.txt", ROOT / "requirements/dev.txt"
NOT_SOURCE = (".venv*", "build", "dist", "out", "*.egg-info", ".*_cache", ".hypothesis", ".git")


def _name(requirement: str) -> str:
    """A requirement's normalized project name (PEP 503)."""
    found = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert found, requirement
    return re.sub(r"[-_.]+", "-", found.group(0)).lower()


def _pinned(lock: Path) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ \\\n]+)", lock.read_text(), re.M)
    return {_name(name): version for name, version in pins}


def test_the_lock_files_pin_every_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    dev = {_name(r) for r in project["optional-dependencies"]["dev"]}
    run_pins, dev_pins = _pinned(RUN_LOCK), _pinned(DEV_LOCK)

    assert runtime <= set(run_pins), f"not in {RUN_LOCK.name}: {runtime - set(run_pins)}"
    assert runtime | dev <= set(dev_pins), (
        f"not in {DEV_LOCK.name}: {(runtime | dev) - set(dev_pins)}"
    )
    assert not dev & set(run_pins), "a dev tool in the runtime lock"
    assert all(dev_pins[name] == version for name, version in run_pins.items())
    for lock in (RUN_LOCK, DEV_LOCK):
        text = lock.read_text()
        assert (
            text.count("==") == text.count("\n    --hash=sha256:") > 0 or "--hash=sha256:" in text
        )
        assert "--index-url" not in text and "--find-links" not in text, "a machine's own index"


def test_the_wheel_installs_alone_and_runs_a_job(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a clean copy: no build/ left by an earlier build
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"),
         str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("batchrun-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "batchrun/emulator/server.py" in names and "batchrun/cli.py" in names
    assert not [n for n in names if n.startswith(("batchrun/bench/", "tests/"))], names
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=True)
    pip = [str(fresh / "bin/python"), "-m", "pip", "install", "--quiet", "--no-compile"]
    for step in ([*pip, "--require-hashes", "-r", str(RUN_LOCK)], [*pip, "--no-deps", str(wheel)]):
        installed = subprocess.run(step, capture_output=True, text=True, timeout=600)
        if installed.returncode and "Could not find a version" in installed.stderr:
            pytest.skip("the package registry cannot be reached: " + installed.stderr[-300:])
        assert installed.returncode == 0, installed.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    write_jsonl(work / "news.jsonl", news_rows(5))
    (work / "job.toml").write_text(
        'kind = "chat"\nmodel = "qwen3-32b-awq"\n[input]\npath = "news.jsonl"\n'
        '[prompt]\nuser = "Summarise:\\n\\n{text}"\n[output]\npath = "out"\n'
    )
    command = str(fresh / "bin/batchrun")

    version = subprocess.run([command, "--version"], capture_output=True, text=True, check=True)
    done = subprocess.run(
        [command, "run", "job.toml", "--no-progress"], cwd=work, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip

    assert version.stdout.strip() == f"batchrun {VERSION}"
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 ok, 0 failed" in done.stdout
    assert OutputLayout(work / "out").job_file.read_text().count(f"batchrun {VERSION}") == 1
