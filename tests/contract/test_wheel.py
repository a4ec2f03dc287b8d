"""The wheel ships the package only: no payload builders, signing kits or fakes (§11)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from paywatch.providers.registry import KNOWN_PROVIDERS

ROOT = Path(__file__).resolve().parents[2]
TEST_CODE = re.compile(r"(^|/)(samples\w*|testkit|fakes?\w*|builders)(\.py|/)", re.IGNORECASE)


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Names inside a wheel built from a clean copy of the sources (no stale build/)."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "paywatch", src / "paywatch", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(src)],
        check=True,
        timeout=600,
    )
    [wheel] = out.glob("paywatch-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_wheel_holds_no_test_builders_or_fakes(wheel_files: list[str]) -> None:
    shipped = [name for name in wheel_files if TEST_CODE.search(name)]
    assert shipped == []
    assert not any(name.startswith("tests/") for name in wheel_files)


def test_wheel_holds_every_provider(wheel_files: list[str]) -> None:
    for provider in KNOWN_PROVIDERS:
        assert f"paywatch/providers/{provider}/__init__.py" in wheel_files
        assert f"paywatch/providers/{provider}/provider.py" in wheel_files
