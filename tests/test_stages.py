"""The package laid out by the stage a row passes through, and the one-way import rule: a stage
imports only itself, the stages before it and the base modules; no stage imports the top
modules (``runner``, ``api``, ``cli``) or the tools (``serve``, ``bench``), which may import
any stage. Function-level (lazy) imports count too."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import batchrun

PACKAGE = Path(batchrun.__file__).parent
STAGES = ("job", "emulator", "service", "output", "input", "tasks", "plan", "send", "report")
"""The stages in the order they may import each other (each only those before it)."""
BASE = ("errors", "version", "clock")
"""Top modules every stage may import: they import no stage."""
TOOLS = ("serve", "bench")
TOP_MOST = 6
"""Modules at the top of the package, ``__init__`` and ``__main__`` aside."""


def _imported(path: Path) -> set[str]:
    """The batchrun modules a file imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] == "batchrun")
    return found


def _first(module: str) -> str:
    """``batchrun.send.pacing`` -> ``send``; ``batchrun`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_each_stage_imports_only_itself_the_stages_before_it_and_the_base() -> None:
    wrong = []
    for stage in STAGES:
        allowed = {*STAGES[: STAGES.index(stage) + 1], *BASE}
        for path in sorted((PACKAGE / stage).rglob("*.py")):
            for module in sorted(_imported(path)):
                if _first(module) not in allowed:
                    wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert wrong == []


def test_the_base_modules_import_no_stage() -> None:
    for name in BASE:
        imported = {_first(module) for module in _imported(PACKAGE / f"{name}.py")}
        assert imported <= set(BASE), name


def test_every_module_lives_in_a_stage_a_tool_or_at_the_top_which_holds_at_most_six() -> None:
    folders = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    assert folders == {*STAGES, *TOOLS}
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(top) <= TOP_MOST, top


def test_every_folder_says_what_it_takes_and_what_it_gives() -> None:
    for stage in (*STAGES, *TOOLS):
        doc = ast.get_docstring(ast.parse((PACKAGE / stage / "__init__.py").read_text())) or ""
        assert "Takes:" in doc and "Gives:" in doc, stage


def test_the_package_docstring_states_the_import_order() -> None:
    assert " → ".join(f"{stage}/" for stage in STAGES) in (batchrun.__doc__ or "")


def test_the_command_loads_neither_polars_nor_matplotlib_until_a_report_needs_them() -> None:
    """Each costs a run's memory (polars about 35 MB resident) and is used only by ``report``,
    ``batchrun.read`` and the hashing of a changed input's lines."""
    code = "import sys, batchrun.cli; print(sorted({'polars', 'matplotlib'} & set(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert loaded.stdout.strip() == "[]"


def test_the_command_keeps_pyarrow_from_loading_pandas() -> None:
    """pyarrow would load pandas (43 MB) at the command's first array; it stays importable."""
    code = (
        "import sys; from batchrun.__main__ import _pyarrow_without_pandas as hide; hide()\n"
        "import pyarrow as pa; pa.table({'id': ['a', 'b']}); print('pandas' in sys.modules)\n"
        "import pandas; print(pandas.DataFrame({'id': ['a']}).shape)"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert shown.stdout.split("\n")[:2] == ["False", "(1, 1)"], shown.stderr
