"""Benchmarks (`make bench`): figures measured in one run on this machine, printed as ratios
where a ratio is what matters. Not tests: nothing here passes or fails on a threshold."""
