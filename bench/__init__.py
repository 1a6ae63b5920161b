"""pygent-runner benchmarks: `python -m bench` (see docs/benchmarks.md).

One command, no timing assertions: each section prints a table (p50, p95,
ratios against baselines measured in the same run) as it completes, the whole
set is printed again at the end, and `--json PATH` keeps every figure.
"""
