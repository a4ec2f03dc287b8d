"""Puts the repository root on ``sys.path``: the benchmarks reuse the test builders.

Benchmarks run as ``.venv/bin/python bench/<name>.py``, so only ``bench/`` is on the path;
``tests.builders`` (payload builders, signing kits, fakes) lives in the repository, not in
the installed package.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
