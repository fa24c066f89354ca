"""Benchmarks run by `make bench` (not part of the pipeline; nothing in `pipeline/` imports them)."""
