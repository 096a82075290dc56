"""The E2B sandbox template for remote runs, and `osiris-dagster e2b template build|dockerfile`.

A Python 3.11 image with the product's dependencies preinstalled at exactly the host's versions:
every runtime requirement of the installed ``osiris-dagster``, followed transitively, pinned
``name==version`` as installed on the host (which `make` / CI install with ``-c constraints.txt``),
so the template and the host cannot drift: Dagster's serialized run format and the e2b wire
protocol are version-sensitive. The worker still checks at every run (exit 4 on a mismatch). The product's own source
is deliberately NOT baked in: every run uploads the host's ``osiris_dagster`` in its bundle, so a
template never runs stale product code and only needs rebuilding when a pin changes.

Building needs E2B's cloud (``E2B_API_KEY``); `dockerfile` shows the same definition offline.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, requires, version

import click
from packaging.utils import canonicalize_name

# `from e2b import Template` happens inside the functions: the CLI registers these commands at
# start-up, and the e2b SDK costs ~0.5 s to import.

DEFAULT_TEMPLATE_NAME = "osiris-dagster"
PYTHON_VERSION = "3.11"


def pinned_requirements() -> list[str]:
    """`name==version` of every distribution the product needs at run time (no extras), as the
    host has it installed: the same pins as the constraints the host was installed with."""
    from packaging.requirements import Requirement

    pins: dict[str, str] = {}
    pending = ["osiris-dagster"]
    while pending:
        name = pending.pop()
        for text in requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue  # an extra's requirement, or one for another platform
            key = canonicalize_name(requirement.name)
            if key in pins:
                continue
            try:
                pins[key] = f"{requirement.name}=={version(requirement.name)}"
            except PackageNotFoundError:
                continue  # not installed on the host: not needed on this platform
            pending.append(requirement.name)
    return sorted(pins.values(), key=str.lower)


def sandbox_template(extra_requirements: tuple[str, ...] = ()) -> object:
    from e2b import Template

    return (
        Template()
        .from_python_image(PYTHON_VERSION)
        .pip_install([*pinned_requirements(), *extra_requirements])
        .set_envs({"PYTHONUNBUFFERED": "1", "DAGSTER_DISABLE_TELEMETRY": "1"})
    )


@click.group("e2b")
def e2b_group() -> None:
    """E2B sandboxes for remote runs (template for the run launcher)."""


@e2b_group.group("template")
def template_group() -> None:
    """The sandbox template: Python 3.11 + the product's pinned dependencies."""


@template_group.command("dockerfile")
@click.option("--extra", multiple=True, metavar="REQUIREMENT", help="Another pip requirement (repeatable).")
def template_dockerfile(extra: tuple[str, ...]) -> None:
    """Print the template as a Dockerfile (offline)."""
    from e2b import Template

    click.echo(Template.to_dockerfile(sandbox_template(extra)))


@template_group.command("build")
@click.option("--name", default=DEFAULT_TEMPLATE_NAME, show_default=True, help="Template name (use it as `template`).")
@click.option("--cpu-count", type=int, default=2, show_default=True)
@click.option("--memory-mb", type=int, default=2048, show_default=True)
@click.option("--extra", multiple=True, metavar="REQUIREMENT", help="Another pip requirement (repeatable).")
def template_build(name: str, cpu_count: int, memory_mb: int, extra: tuple[str, ...]) -> None:
    """Build the template in E2B's cloud (needs E2B_API_KEY)."""
    if not os.environ.get("E2B_API_KEY"):
        raise click.UsageError("E2B_API_KEY is not set: building a template needs E2B's cloud")
    from e2b import Template

    info = Template.build(
        sandbox_template(extra),  # type: ignore[arg-type]
        name,
        cpu_count=cpu_count,
        memory_mb=memory_mb,
        on_build_logs=lambda entry: click.echo(str(entry), err=True),
    )
    click.echo(f"built template {name}: {info}")
    click.echo(f"set run_launcher.config.template: {name}")
