"""Benchmarks (docs/benchmarks.md): run with ``make bench`` or ``python -m bench``."""
