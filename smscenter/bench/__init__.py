"""Benchmark scripts (python -m smscenter.bench.NAME); figures printed, never asserted."""
