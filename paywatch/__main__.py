"""`python -m paywatch` == the `paywatch` command."""

from __future__ import annotations

import sys

from paywatch.ops.cli import main

sys.exit(main())
