"""Benchmarks of issue 3: ``python -m benchmarks.run --suite cpu|gpu|all`` (see benchmarks/run.py).

Not part of the installed package; nothing here runs in the tests except the smoke
test (tests/test_benchmarks_smoke.py), which times nothing.
"""
