"""`osiris-dagster e2b pool fill|status|drain`: manage the launcher's warm sandbox pool by hand.

The pool itself (and the same commands as `python -m osiris_dagster.remote.sandbox_pool`) lives
in `sandbox_pool`; it is imported only when the command runs, because it imports the e2b SDK.
"""

from __future__ import annotations

import sys

import click


@click.command("pool")
@click.argument("action", type=click.Choice(["fill", "status", "drain"]))
@click.option(
    "--dagster-home",
    envvar="DAGSTER_HOME",
    help="Instance whose dagster.yaml configures the E2BRunLauncher with a pool (default: $DAGSTER_HOME).",
)
def pool_command(action: str, dagster_home: str | None) -> None:
    """Fill the warm pool to its size, list its sandboxes, or kill the unclaimed ones."""
    from osiris_dagster.remote.sandbox_pool import main

    sys.exit(main([action, *(["--dagster-home", dagster_home] if dagster_home else [])]))
