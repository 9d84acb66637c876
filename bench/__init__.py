"""Benchmarks: each compares valueloop's path with a peer measured in the same run, and records JSON in results/."""
