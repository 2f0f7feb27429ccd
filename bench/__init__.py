"""Benchmarks that print figures against a reference run in the same process (not timed tests)."""
