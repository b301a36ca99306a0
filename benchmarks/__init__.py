"""Benchmarks of the wals2 sweep against a numpy reference and `implicit`; run ``python -m benchmarks.run``."""
