"""Helpers for biosnn's tests and benchmarks (reference model zoo)."""
