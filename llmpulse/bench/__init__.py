"""Benchmarks run from the command line and ``benchmarks/``; each compares llmpulse with
baselines measured in the same process on the same data."""
