"""atheris entry point: ``python -m fuzz.run <provider> [libFuzzer flags]`` (see ``make fuzz``).

Only paywatch's provider, schema and codec modules are instrumented for coverage: they are
what is under test, and instrumenting the standard library and pydantic would slow every
input several times over for no finding of ours. A crash (any exception that is not a
ProviderError) stops the run with the traceback and the input saved as ``crash-<sha1>``.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["paywatch.providers", "paywatch.schemas"]):
    from fuzz.targets import FACTORIES


def main() -> None:
    """Build the named target and hand its one-input function to libFuzzer."""
    if len(sys.argv) < 2 or sys.argv[1] not in FACTORIES:
        sys.exit(f"usage: python -m fuzz.run <{'|'.join(FACTORIES)}> [libFuzzer flags]")
    target = FACTORIES[sys.argv[1]]()
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target.one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
