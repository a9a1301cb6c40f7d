"""scimgate benchmarks: `python -m bench.run [--quick]` (see docs/benchmarks.md)."""
