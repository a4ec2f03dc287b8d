"""House figures: lines per folder, long functions and files, duplicates, wheel size."""

from __future__ import annotations

import ast
import collections
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()


def py_files(folder: str) -> list[pathlib.Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def lines_per_folder() -> dict[str, int]:
    counts: dict[str, int] = collections.Counter()
    for path in py_files("paywatch"):
        rel = path.relative_to(ROOT / "paywatch")
        top = rel.parts[0] if len(rel.parts) > 1 else "(top-level modules)"
        counts[top] += len(path.read_text().splitlines())
    return dict(sorted(counts.items()))


def long_functions(limit: int = 40) -> list[tuple[str, int]]:
    found = []
    for path in py_files("paywatch"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > limit:
                    found.append((f"{path.relative_to(ROOT)}:{node.name}", size))
    return sorted(found, key=lambda item: -item[1])


def long_files(limit: int = 300) -> list[tuple[str, int]]:
    sizes = [
        (str(p.relative_to(ROOT)), len(p.read_text().splitlines())) for p in py_files("paywatch")
    ]
    return sorted([s for s in sizes if s[1] > limit], key=lambda item: -item[1])


def duplicate_blocks(min_lines: int = 12) -> str:
    tool = shutil.which("duplicates")
    if tool is None:
        return "duplicates: not installed on this machine"
    out = subprocess.run(
        [
            tool,
            "--repo",
            str(ROOT / "paywatch"),
            "--min-lines",
            str(min_lines),
            "--most",
            "200",
            "--seconds",
            "120",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return out


def wheel_size() -> tuple[int, list[str]]:
    """The wheel built from a clean copy of the sources (a stale build/ would leak old files)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "src"
        skip = shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "tests", "bench")
        shutil.copytree(ROOT, src, ignore=skip)
        out = pathlib.Path(tmp) / "dist"
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
            check=True,
            capture_output=True,
        )
        wheel = next(out.glob("*.whl"))
        names = zipfile.ZipFile(wheel).namelist()
        return wheel.stat().st_size, names


def main() -> None:
    folders = lines_per_folder()
    print("lines per top-level folder of paywatch/:")
    for name, count in folders.items():
        print(f"  {name:22} {count:6}")
    print(f"  {'total':22} {sum(folders.values()):6}")
    funcs = long_functions()
    print(f"functions over 40 lines: {len(funcs)}")
    for name, size in funcs:
        print(f"  {size:4}  {name}")
    files = long_files()
    print(f"files over 300 lines: {len(files)}")
    for name, size in files:
        print(f"  {size:4}  {name}")
    dups = duplicate_blocks()
    first = dups.splitlines()[0] if dups else "?"
    print(f"duplicate blocks of 12+ lines (duplicates --min-lines 12): {first}")
    for line in dups.splitlines()[1:]:
        print(f"  {line}")
    size, names = wheel_size()
    builders = [n for n in names if re.search(r"samples|testkit|fake", n)]
    print(f"wheel: {size} bytes, {len(names)} files, test builders/fakes inside: {len(builders)}")
    for name in builders:
        print(f"  {name}")


if __name__ == "__main__":
    main()
