"""Benchmarks: `make bench` (or `python -m bench`). See docs/performance.md."""
