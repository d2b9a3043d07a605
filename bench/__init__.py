"""Benchmark scripts (`python bench/sst2.py`); their results go to docs/benchmarks.md."""
