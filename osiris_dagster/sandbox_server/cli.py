"""``osiris-dagster sandbox serve``: run the local E2B-compatible server until Ctrl-C.

The main CLI attaches the group with ``cli.add_command(sandbox)``; until then use
``python -m osiris_dagster.sandbox_server.cli serve``.
"""

from __future__ import annotations

import shlex
import signal
from types import FrameType

import click

from .faults import FAULTS_ENV, FaultPlan, FaultSpecError
from .network import NETWORK_MODES, NetworkIsolationUnavailable
from .server import LocalSandboxServer


@click.group()
def sandbox() -> None:
    """Local E2B-compatible sandbox server (development and CI; not a security boundary)."""


@sandbox.command()
@click.option("--port", type=int, default=0, show_default=True, help="TCP port; 0 picks a free one.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address; loopback only.")
@click.option(
    "--extra-path",
    multiple=True,
    type=click.Path(file_okay=False),
    help="Directory prepended to PATH inside sandboxes (repeatable), e.g. a venv's bin.",
)
@click.option(
    "--base-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where sandbox root directories are created (default: system temp dir).",
)
@click.option(
    "--faults",
    envvar=FAULTS_ENV,
    default=None,
    metavar="SPEC",
    help=(
        "Drop command streams / file transfers on purpose, e.g. 'every=3,after=2,seed=7' or "
        "'rate=0.2,drop=streams,max=2' (keys: drop, rate, every, after, seed, max, cut; "
        f"see docs/local-sandbox.md). Also read from {FAULTS_ENV}."
    ),
)
@click.option(
    "--network",
    type=click.Choice(NETWORK_MODES),
    default="auto",
    show_default=True,
    help=(
        "isolated: each sandbox in its own network namespace, without the host's loopback (root); "
        "shared: the host's network; auto: isolated when possible (docs/local-sandbox.md)."
    ),
)
@click.option(
    "--forward",
    default="",
    metavar="PORTS",
    help="Host ports an isolated sandbox reaches at the bridge address, e.g. '3306,5432'.",
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    metavar="KEY",
    help="Accept only this API key (repeatable); others get E2B's 401. Default: any key.",
)
def serve(
    port: int,
    host: str,
    extra_path: tuple[str, ...],
    base_dir: str | None,
    faults: str | None,
    network: str,
    forward: str,
    api_keys: tuple[str, ...],
) -> None:
    """Serve until Ctrl-C; prints the environment variables that point the launcher and the e2b SDK here."""
    try:
        plan = FaultPlan.parse(faults) if faults and faults.strip() else None
    except FaultSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults") from exc
    try:
        ports = [int(p) for p in forward.replace(" ", "").split(",") if p]
    except ValueError as exc:
        raise click.BadParameter(f"not a list of ports: {forward!r}", param_hint="--forward") from exc
    try:
        server = LocalSandboxServer(
            port=port,
            host=host,
            extra_path=list(extra_path),
            base_dir=base_dir,
            faults=plan or "",
            network=network,  # type: ignore[arg-type]
            forward=ports,
            api_keys=list(api_keys) or None,
        )
    except NetworkIsolationUnavailable as exc:
        raise click.BadParameter(str(exc), param_hint="--network") from exc
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--host") from exc
    server.start()
    # SIGTERM (CI job teardown, `kill`) must also kill the sandboxes' processes and
    # remove their roots, exactly like Ctrl-C.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    for name, value in server.env().items():
        click.echo(f"export {name}={shlex.quote(value)}")
    click.echo(f"# local E2B sandbox server listening on {server.url} (Ctrl-C to stop)", err=True)
    if server.isolated:
        forwarded = ", ".join(str(p) for p in ports) or "none"
        click.echo(f"# sandboxes reach the host at {server.host_address} (forwarded ports: {forwarded})", err=True)
    if plan is not None:
        click.echo(f"# fault injection on: {plan.describe()}", err=True)
    # The launcher passes the proxy itself (from OSIRIS_SANDBOX_SERVER); a script using the SDK
    # directly must too, or it resolves api.<domain> in the real DNS and fails.
    click.echo(
        f'# e2b SDK used directly: also pass proxy="{server.url}" to Sandbox.create/connect/list, '
        f"or run that one process with HTTPS_PROXY={server.url}",
        err=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sandbox()
