"""Long-running processes freeze their import-time heap and collect young objects less often."""

from __future__ import annotations

import subprocess
import sys

from paywatch.ops.runners import GC_THRESHOLDS

PROBE = """
import gc
import paywatch.ops.runners as runners
before = gc.get_freeze_count()
runners.tune_gc()
print(before, gc.get_freeze_count(), *gc.get_threshold())
"""


def test_tune_gc_freezes_the_loaded_heap_and_raises_the_thresholds() -> None:
    # In a child process: the test process's own collector is left as it is.
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    before, frozen, *thresholds = map(int, out)
    assert before == 0 and frozen > 10_000  # fastapi, uvicorn, pydantic... are loaded
    assert tuple(thresholds) == GC_THRESHOLDS != (700, 10, 10)
