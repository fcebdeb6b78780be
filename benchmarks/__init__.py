"""genforge's benchmarks: measured ratios against the plain alternative a user would otherwise use.

    python -m benchmarks.run [--quick] [--only FAMILY ...]      (`make bench`, `make bench-quality`)

One module per family (frechet, agreement, throughput, evaluation, demo, gpu, quality); `report.py` writes
`benchmarks/results/latest.json` and `latest.md`. Every ratio is taken within one run of the harness, from
interleaved repeats, and reported as a median with its spread.
"""
