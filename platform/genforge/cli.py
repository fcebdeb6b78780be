"""Temporary shim while the command line moves to pipelines/cli.py."""
from pipelines.cli import cli, main  # noqa: F401

if __name__ == "__main__":
    main()
