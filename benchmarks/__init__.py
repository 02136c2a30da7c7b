"""The siem-plugins benchmark suite: ``python -m benchmarks`` (docs/performance.md)."""
