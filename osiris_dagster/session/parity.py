"""Do two runs of the same job agree? Local vs sandboxed, or any two sessions.

Compared, as in the seed report's tables: event counts per type, data-flow metrics
(``rows_read``, ``rows_processed``, ``rows_written``, ``steps_completed``, ... per step and in
total), the artifact tree with each artifact's sha256, and the sha256 of every output file the
runs reported (read from each run's own project folder, the parent of its ``logs/``).

Allowed to differ, and nothing else: the declared remote-only events and metrics (the schemas'
``x-remote-only`` lists, via `catalogue()`), durations and rates (metrics in ``ms`` and
``rows/s``), timestamps and the
sandbox id — none of which are compared at all.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import click

from osiris_dagster.session.catalogue import catalogue
from osiris_dagster.session.reader import SessionRecord, find_session
from osiris_dagster.session.session_log import file_sha256

DATA_FLOW_METRICS = ("rows_read", "rows_processed", "rows_written", "steps_completed", "steps_total")


@dataclass(frozen=True)
class ParityRow:
    section: str
    name: str
    a: str
    b: str
    allowed: bool = False  # a declared remote-only difference

    @property
    def same(self) -> bool:
        return self.a == self.b


@dataclass
class ParityReport:
    rows: list[ParityRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(row.same or row.allowed for row in self.rows)

    def differences(self) -> list[ParityRow]:
        return [row for row in self.rows if not (row.same or row.allowed)]

    def render(self, label_a: str = "run A", label_b: str = "run B") -> str:
        width = max([len(row.name) for row in self.rows] + [24])
        lines: list[str] = []
        section = None
        for row in self.rows:
            if row.section != section:
                section = row.section
                lines.append(f"\n{section:<{width}}  {label_a:>16}  {label_b:>16}")
            mark = "✓" if row.same else ("· remote-only" if row.allowed else "✗ DIFFERENT")
            lines.append(f"{row.name:<{width}}  {row.a:>16}  {row.b:>16}  {mark}")
        verdict = "PARITY" if self.ok else f"NO PARITY: {len(self.differences())} difference(s)"
        lines.append(f"\n{verdict}")
        return "\n".join(lines).lstrip("\n")


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "(missing)"


_TIMING_UNITS = frozenset({"ms", "rows/s"})  # wall-clock figures: never equal twice


def _data_flow(record: SessionRecord) -> dict[str, float]:
    """Every non-duration, non-remote-only metric: per step and as a run total."""
    remote_only = catalogue().remote_only_metrics
    values: dict[str, float] = {}
    for line in record.metrics:
        name = line["metric"]
        if name in remote_only or line.get("unit") in _TIMING_UNITS:
            continue
        key = f"{name}[{line['step_id']}]" if "step_id" in line else name
        values[key] = values.get(key, 0) + line["value"]
        if "step_id" in line:
            values[f"{name} (total)"] = values.get(f"{name} (total)", 0) + line["value"]
    return values


def _outputs(record: SessionRecord) -> dict[str, tuple[str | None, str | None]]:
    """Per output path: (hash recorded when the run wrote it, hash of the file on disk now)."""
    project = record.directory.parent.parent
    outputs: dict[str, tuple[str | None, str | None]] = {}
    for event in record.events:
        if event["event"] == "artifact_created" and event.get("artifact_type") == "output":
            path = project / event["path"]
            on_disk = file_sha256(path) if path.is_file() else None
            outputs[event["path"]] = (event.get("sha256") or on_disk, on_disk)
    return outputs


def _output_rows(a: SessionRecord, b: SessionRecord) -> list[ParityRow]:
    """What each run wrote, compared — and a file changed on disk since is a difference too.

    Two runs in one project write the same paths, so the file on disk belongs to whichever ran
    last: the recorded hashes are what is compared. A file on disk matching neither run's
    recorded hash was altered after both, and no longer is what either run produced.
    """
    outputs_a, outputs_b = _outputs(a), _outputs(b)
    rows = []
    for name in sorted(set(outputs_a) | set(outputs_b)):
        recorded_a, disk_a = outputs_a.get(name, (None, None))
        recorded_b, disk_b = outputs_b.get(name, (None, None))
        rows.append(ParityRow("Outputs (sha256)", name, _short(recorded_a), _short(recorded_b)))
        written = {recorded_a, recorded_b}
        for label, on_disk in (("A", disk_a), ("B", disk_b)):
            if on_disk is not None and on_disk not in written:
                rows.append(ParityRow("Outputs (sha256)", f"{name} on disk ({label})", _short(on_disk), "changed"))
    return rows


def compare_sessions(dir_a: Path, dir_b: Path) -> ParityReport:
    a, b = SessionRecord.read(dir_a), SessionRecord.read(dir_b)
    remote_only = catalogue().remote_only_events
    report = ParityReport()
    counts_a, counts_b = a.event_counts(), b.event_counts()
    for name in sorted(set(counts_a) | set(counts_b)):
        report.rows.append(
            ParityRow("Events", name, str(counts_a.get(name, 0)), str(counts_b.get(name, 0)), name in remote_only)
        )
    flow_a, flow_b = _data_flow(a), _data_flow(b)
    ordered = sorted(set(flow_a) | set(flow_b), key=lambda k: (k.split("[")[0] not in DATA_FLOW_METRICS, k))
    for name in ordered:
        report.rows.append(ParityRow("Metrics", name, _number(flow_a.get(name)), _number(flow_b.get(name))))
    for name in sorted(set(a.artifact_files()) | set(b.artifact_files())):
        report.rows.append(ParityRow("Artifacts", name, _artifact_digest(dir_a, name), _artifact_digest(dir_b, name)))
    report.rows.extend(_output_rows(a, b))
    status_a, status_b = a.status or {}, b.status or {}
    for key in ("ok", "steps_total", "steps_completed"):
        report.rows.append(ParityRow("Status", key, str(status_a.get(key)), str(status_b.get(key))))
    return report


def _artifact_digest(session_dir: Path, name: str) -> str:
    path = session_dir / "artifacts" / name
    return _short(file_sha256(path)) if path.is_file() else "(missing)"


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else str(value)


def _session_dir(logs_dir: Path, run: str) -> Path:
    candidate = Path(run)
    if candidate.is_dir() and (candidate / "events.jsonl").exists():
        return candidate
    found = find_session(logs_dir, run)
    if found is None:
        raise click.BadParameter(f"no session '{run}' under {logs_dir} (give a run id, a unique prefix, or a path)")
    return found


@click.command("parity")
@click.argument("run_a")
@click.argument("run_b")
@click.pass_obj
def parity_command(project: object, run_a: str, run_b: str) -> None:
    """Compare two runs' sessions (run id, unique prefix, `last`, or session dir); exit 1 on a difference."""
    from osiris_dagster.project import ProjectLayout

    logs_dir = project.logs_dir if isinstance(project, ProjectLayout) else ProjectLayout.discover().logs_dir
    dir_a, dir_b = _session_dir(logs_dir, run_a), _session_dir(logs_dir, run_b)
    report = compare_sessions(dir_a, dir_b)
    click.echo(report.render(dir_a.name[:16], dir_b.name[:16]))
    sys.exit(0 if report.ok else 1)
