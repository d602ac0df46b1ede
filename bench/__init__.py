"""Benchmarks: throughput, latency, freshness, memory — each beside a ceiling measured in the same run.

Run one with ``python -m bench.<name> [--json]``, all with ``python -m bench.run_all [--quick]``.
"""
