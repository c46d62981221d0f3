"""Benchmarks: accuracy against speed, per backend, precision and number of references."""
