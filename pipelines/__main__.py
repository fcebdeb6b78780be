"""`python -m pipelines ...` is the `genforge` command (what a submitted Ray job runs: the console script may not
exist on the cluster's image, the shipped packages do)."""

from pipelines.cli import main

main()
