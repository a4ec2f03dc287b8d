"""Coverage-guided fuzzing of every provider's verify -> read/parse -> normalize (issue 12 item 9).

``mutate`` turns fuzzer bytes into structure-aware mutations of real fixtures, ``targets``
builds one signed delivery per input and drives it through the provider port, ``run`` is
the atheris entry point (``make fuzz``). The smoke test in tests/unit runs the same
one-input functions without atheris, so a regression shows in ``make test``.
"""
