"""`genforge datasets` and `genforge families`: what the catalogues hold."""

from __future__ import annotations

import click


@click.command()
def datasets() -> None:
    """List the datasets a spec's data.dataset may name."""
    from genforge.data import DATASETS

    for name in DATASETS:
        click.echo(name)


@click.command()
def families() -> None:
    """List the model families a spec's model.family may name."""
    from genforge.families import FAMILIES

    for fam in FAMILIES.values():
        click.echo(f"{fam.name:6} {fam.pattern:12} {'conditional' if fam.conditional else '':12} {fam.summary}")
