"""What a correct run of the movie demo leaves behind, checked independently of product code.

The reference CSV formatting here is written from the product's documented contract (README,
"CSV values"), not imported from the product, so a formatting bug cannot hide behind itself.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema

REPO = Path(__file__).resolve().parents[2]
DEMO_TABLES = {
    "actors": "SELECT * FROM actors ORDER BY id",
    "directors": "SELECT * FROM directors ORDER BY id",
    "movies": "SELECT * FROM movies ORDER BY id",
    "movie_actors": "SELECT * FROM movie_actors ORDER BY movie_id, actor_id",
    "reviews": "SELECT * FROM reviews ORDER BY id",
}


def reference_value(table: str, column: str, value: Any) -> str:
    if value is None:
        return ""
    # Every cell is the value as the database stores it: a SQLite DECIMAL(3,1) column holding
    # INTEGER 8 is "8"; MariaDB's client hands DECIMAL(3,1) back as Decimal("8.0").
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return str(value)


def assert_csv_matches(path: Path, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    with path.open(newline="", encoding="utf-8") as handle:
        parsed = list(csv.reader(handle))
    assert parsed[0] == list(columns), f"{path}: header {parsed[0]} != {list(columns)}"
    expected = [[reference_value(table, c, v) for c, v in zip(columns, row, strict=True)] for row in rows]
    assert len(parsed) - 1 == len(expected), f"{path}: {len(parsed) - 1} rows, source has {len(expected)}"
    for number, (got, want) in enumerate(zip(parsed[1:], expected, strict=True), start=1):
        assert got == want, f"{path} row {number}: {got} != {want}"
    return len(expected)


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((REPO / "schemas" / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def assert_session_valid(session_dir: Path, *, steps: int) -> dict[str, Any]:
    """Every line schema-valid, the files all there; returns status.json."""
    for name, file in (("events", "events.jsonl"), ("metrics", "metrics.jsonl")):
        validator = _validator(name)
        lines = (session_dir / file).read_text(encoding="utf-8").splitlines()
        assert lines, f"{file} is empty"
        for line in lines:
            errors = list(validator.iter_errors(json.loads(line)))
            assert not errors, f"{file}: {line}: {errors[0].message}"
    status = json.loads((session_dir / "status.json").read_text())
    assert not list(_validator("status").iter_errors(status))
    configs = sorted(p.parent.name for p in (session_dir / "artifacts").glob("*/cleaned_config.json"))
    assert len(configs) == steps, configs
    return status
