"""Throughput benchmarks of dppo-tf (``python -m benchmarks.run``); never part of ``make test``."""
