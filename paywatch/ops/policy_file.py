"""Reading a policy file given on the command line (`policy set`, `experiment start`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from paywatch.errors import ConfigError


def read_policy(path: str) -> Any:
    """The decoded JSON of a policy file (`-`: stdin); ConfigError when unreadable."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"policy file {path} is not JSON: {exc}") from exc
