"""Benchmark evaluation: OPE metrics, result files and submission zips, reports, the benchmark runner."""
