"""Benchmarks (BENCH.md): run with ``make bench`` or ``python -m bench``."""
