"""`osiris-dagster`: validate and run pipelines, run the demo, read session logs, serve sandboxes.

Exit codes: 0 success; 1 the run failed; 2 bad input (the message names the file and field,
and nothing was written).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from osiris_dagster.errors import InputError
from osiris_dagster.project import ProjectLayout
from osiris_dagster.secrets import mask_text

EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2


@click.group()
@click.option(
    "--project-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="OSIRIS_PROJECT_DIR",
    help="Project folder (holding assets/ and resources/); default: the current directory.",
)
@click.pass_context
def cli(ctx: click.Context, project_dir: Path | None) -> None:
    """OML pipelines as Dagster assets, run locally or in E2B sandboxes."""
    ctx.obj = ProjectLayout.discover(project_dir)


def _params(values: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError("--param", item, "expected NAME=VALUE")
        params[name] = value
    return params


def _pipeline_path(project: ProjectLayout, pipeline: str) -> Path:
    """A pipeline by path, or by name inside the project's assets/ folder."""
    candidate = Path(pipeline)
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        return candidate.resolve() if candidate.exists() else candidate
    for path in project.pipeline_files():
        if path.stem == pipeline or path.stem == pipeline.replace("-", "_"):
            return path
    return project.assets_dir / f"{pipeline}.yaml"


def _fail_input(error: InputError) -> None:
    click.echo(f"error: {mask_text(str(error))}", err=True)
    sys.exit(EXIT_BAD_INPUT)


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path))
def init(directory: Path) -> None:
    """Write a new runnable project into DIRECTORY: demo pipeline, connections, workspace.yaml, dg settings."""
    from osiris_dagster.project_init import init_project

    try:
        files = init_project(directory)
    except InputError as error:
        _fail_input(error)
    click.echo(f"created project {directory} ({len(files)} files). Next:")
    click.echo(f"  cd {directory} && osiris-dagster demo")
    click.echo("  dagster job execute -m osiris_dagster.definitions -j movies_to_csv   # or: osiris-dagster ui")


@cli.command()
@click.argument("pipeline")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="Set ${params.NAME} (repeatable).")
@click.pass_obj
def validate(project: ProjectLayout, pipeline: str, params: tuple[str, ...]) -> None:
    """Check a pipeline, its connections and their environment variables; exit 0 or 2."""
    from osiris_dagster.local_run import validate_pipeline

    try:
        spec = validate_pipeline(project, _pipeline_path(project, pipeline), _params(params))
    except InputError as error:
        _fail_input(error)
    click.echo(f"ok: {spec.file}: pipeline '{spec.name}', {len(spec.steps)} steps")


@cli.command()
@click.argument("pipeline")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="Set ${params.NAME} (repeatable).")
@click.option("--verbose", "-v", is_flag=True, help="Show Dagster's event log on stderr.")
@click.pass_obj
def run(project: ProjectLayout, pipeline: str, params: tuple[str, ...], verbose: bool) -> None:
    """Materialize a pipeline's assets locally through Dagster and print a summary."""
    _run_and_report(project, _pipeline_path(project, pipeline), params, verbose)


def _run_and_report(project: ProjectLayout, path: Path, params: tuple[str, ...], verbose: bool = False) -> None:
    from osiris_dagster.local_run import run_pipeline

    try:
        outcome = run_pipeline(project, path, _params(params), log_level="DEBUG" if verbose else "WARNING")
    except InputError as error:
        _fail_input(error)
    _print_summary(project, outcome.session_dir)
    sys.exit(0 if outcome.ok else EXIT_RUN_FAILED)


def _print_summary(project: ProjectLayout, session_dir: Path) -> None:
    from osiris_dagster.session.reader import SessionRecord

    record = SessionRecord.read(session_dir)
    status = record.status or {}
    ok = status.get("ok", False)
    click.echo(f"{'✓' if ok else '✗'} pipeline {status.get('pipeline', '?')}: {'succeeded' if ok else 'FAILED'}")
    click.echo(f"  steps:        {status.get('steps_completed', 0)}/{status.get('steps_total', 0)} completed")
    click.echo(f"  rows_read:    {int(record.metric_total('rows_read'))}")
    click.echo(f"  rows_written: {int(record.metric_total('rows_written'))}")
    outputs = [e["path"] for e in record.events if e["event"] == "artifact_created" and e["artifact_type"] == "output"]
    outputs += [f"{e['table']} ({e['transport']})" for e in record.events if e["event"] == "write.start"]
    for output in outputs:
        click.echo(f"  wrote:        {output}")
    if not ok and status.get("reason"):
        click.echo(f"  error:        {status['reason']}")
    click.echo(f"  session:      {project.relative(session_dir)}")


@cli.group(invoke_without_command=True)
@click.pass_context
def demo(ctx: click.Context) -> None:
    """Run the movie demo (SQLite, embedded) end to end: `osiris-dagster demo`."""
    if ctx.invoked_subcommand is None:
        project: ProjectLayout = ctx.obj
        _run_and_report(project, project.assets_dir / "movies_to_csv.yaml", ())


@demo.command("load-mysql")
@click.option(
    "--url",
    default="mysql+pymysql://root@127.0.0.1:3306/osiris_movies",
    show_default=True,
    help="SQLAlchemy URL of the MySQL/MariaDB database to (re)create the demo tables in.",
)
def demo_load_mysql(url: str) -> None:
    """Load the demo movie tables into a MySQL / MariaDB database (created if missing)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from osiris_dagster.demo.movies import load_demo_data

    target = make_url(url)
    if target.database:
        server = create_engine(target.set(database=""))
        with server.begin() as connection:
            connection.execute(text(f"CREATE DATABASE IF NOT EXISTS `{target.database}` CHARACTER SET utf8mb4"))
        server.dispose()
    counts = load_demo_data(target)
    click.echo(f"loaded into {target.render_as_string(hide_password=True)}: {json.dumps(counts)}")


@cli.command()
@click.option("--port", default=3000, show_default=True, help="Port of the web UI (on 127.0.0.1).")
@click.pass_obj
def ui(project: ProjectLayout, port: int) -> None:
    """Open the Dagster UI on this project: `dagster dev -w workspace.yaml`, sharing the CLI's DAGSTER_HOME.

    Ctrl-C or SIGTERM stops it whole within a few seconds (`ui_server`)."""
    import os

    from osiris_dagster.local_run import dagster_home
    from osiris_dagster.ui_server import serve_ui

    workspace = project.root / "workspace.yaml"
    if not workspace.is_file():
        _fail_input(InputError(str(workspace), "", "not found: the UI loads the project through workspace.yaml"))
    from osiris_dagster.instance_storage import ensure_storage

    home = dagster_home(project)
    ensure_storage(home)  # before the webserver and the daemon both open a fresh home
    env = {**os.environ, "DAGSTER_HOME": str(home), "OSIRIS_PROJECT_DIR": str(project.root)}
    dagster = str(Path(sys.executable).with_name("dagster"))
    click.echo(f"Dagster UI on http://127.0.0.1:{port} (DAGSTER_HOME={env['DAGSTER_HOME']})")
    command = [dagster, "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)]
    sys.exit(serve_ui(command, env=env, cwd=project.root))


@cli.group()
def logs() -> None:
    """Read session directories under logs/."""


@logs.command("list")
@click.pass_obj
def logs_list(project: ProjectLayout) -> None:
    """One line per session: run id, pipeline, outcome (ok, failed, abandoned, running), where it ran."""
    from osiris_dagster.runs.abandoned import reclaim_abandoned_runs
    from osiris_dagster.runs.owner import read_owners
    from osiris_dagster.session.reader import SessionRecord

    if not project.logs_dir.is_dir():
        return
    # A run whose process died is marked failed (status.json, Dagster) before it is listed.
    reclaim_abandoned_runs(project)
    live = {owner.run_id for owner in read_owners(project)}
    sessions = sorted(project.logs_dir.glob("run_*"), key=lambda p: p.stat().st_mtime)
    unknown = [d.name.removeprefix("run_") for d in sessions if not (d / "status.json").exists()]
    dagster_status = _dagster_run_status(project, [run_id for run_id in unknown if run_id not in live])
    for directory in sessions:
        run_id = directory.name.removeprefix("run_")
        status = SessionRecord.read(directory).status or {}
        if status:
            reason = str(status.get("reason") or "")
            outcome = "ok" if status.get("ok") else ("abandoned" if reason.startswith("abandoned") else "failed")
        elif run_id in live:
            outcome = "running"
        else:  # no status and no owner record: a run from before owner records, or remote in flight
            outcome = dagster_status.get(run_id, "unknown")
        click.echo(f"{directory.name}\t{status.get('pipeline', '?')}\t{outcome}\t{status.get('sandbox_id', '')}")


def _dagster_run_status(project: ProjectLayout, run_ids: list[str]) -> dict[str, str]:
    """Dagster's word on runs the session directory cannot tell about (`running`, `failed`, ...)."""
    if not run_ids:
        return {}
    from dagster import DagsterRunStatus, RunsFilter

    from osiris_dagster.instance_storage import open_instance
    from osiris_dagster.local_run import dagster_home

    with open_instance(dagster_home(project)) as instance:
        runs = instance.get_runs(RunsFilter(run_ids=run_ids))
    words = {DagsterRunStatus.SUCCESS: "ok", DagsterRunStatus.STARTED: "running", DagsterRunStatus.STARTING: "running"}
    return {run.run_id: words.get(run.status, run.status.value.lower()) for run in runs}


@logs.command("show")
@click.argument("run")
@click.pass_obj
def logs_show(project: ProjectLayout, run: str) -> None:
    """Show a session: status, events and metrics (RUN: run id, unique prefix, or `last`)."""
    from osiris_dagster.session.reader import SessionRecord, find_session

    directory = find_session(project.logs_dir, run)
    if directory is None:
        _fail_input(InputError(str(project.logs_dir), run, "no such session (or the prefix is ambiguous)"))
        return
    record = SessionRecord.read(directory)
    _print_summary(project, directory)
    click.echo("\nevents:")
    for event in record.events:
        fields = {k: v for k, v in event.items() if k not in {"ts", "session", "event"}}
        click.echo(f"  {event['ts']}  {event['event']:<28} {json.dumps(fields, ensure_ascii=False)}")
    click.echo("\nmetrics:")
    for metric in record.metrics:
        step = f" [{metric['step_id']}]" if "step_id" in metric else ""
        click.echo(f"  {metric['metric']:<22} {metric['value']:>12} {metric['unit']}{step}")
    files = record.artifact_files()
    if files:
        click.echo("\nartifacts:")
        for name in files:
            click.echo(f"  artifacts/{name}")


def _add_optional_groups() -> None:
    """Command groups that live beside their feature (the sandbox server, the launcher)."""
    from osiris_dagster.remote.pool_cli import pool_command
    from osiris_dagster.remote.template import e2b_group
    from osiris_dagster.sandbox_server.cli import sandbox
    from osiris_dagster.session.parity import parity_command

    e2b_group.add_command(pool_command)
    cli.add_command(sandbox)
    cli.add_command(e2b_group)
    cli.add_command(parity_command)


_add_optional_groups()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
