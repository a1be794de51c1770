"""Benchmarks: ``python -m bench`` (see the README and docs/benchmarks.md)."""
