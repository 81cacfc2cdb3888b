"""Rowsmith's benchmarks (issue 5): `make bench`, or `python -m benchmarks [--quick]`.

Every figure is measured in one run on one machine, against a baseline measured in the
same run: the machine is shared and small, so only ratios travel. See docs/benchmarks.md.
"""
