"""The import contracts of `make lint` (pyproject [tool.importlinter]) hold, and they bite.

The negative cases copy the package, break one rule in the copy and expect lint-imports to
name the broken contract: a contract that could not fail would prove nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
LAYERS = "Layers (ARCHITECTURE §11): imports point down or sideways, never up BROKEN"
CIRCLE = "No import circle anywhere in paywatch BROKEN"
PURE = "Pure cores import no framework (recovery, schemas, providers' verify/normalize) BROKEN"


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_contracts_hold_on_the_package() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(
        REPO / "paywatch", tmp_path / "paywatch", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "recovery/state.py",
            "from paywatch.api.query import deps",
            LAYERS,
        ),
        (
            "tenants/store.py",
            "from paywatch.projections import runner",
            LAYERS,
        ),
        (
            "recovery/rules.py",
            "from paywatch.recovery import state",
            CIRCLE,
        ),
        (
            "recovery/plan.py",
            "import httpx",
            PURE,
        ),
        (
            "providers/stripe/normalize.py",
            "import asyncpg",
            PURE,
        ),
    ],
)
def test_a_broken_rule_is_reported(tmp_path: Path, module: str, line: str, contract: str) -> None:
    root = _copy(tmp_path)
    _append(root / "paywatch" / module, line)
    result = _lint(root)
    assert result.returncode != 0
    assert contract in result.stdout
