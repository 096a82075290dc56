"""Connection profiles: `resources/connections.yaml`, `${ENV}` secrets, default-alias rules.

A step names its connection as ``@family.alias``. When it names none, the family's alias marked
``default: true`` is used, else the alias called ``default``; anything else is an error that
lists the aliases there are. ``${VAR}`` is replaced from the environment (``${VAR:-fallback}``
gives a fallback); an unset variable is an error naming the variable, the field and the alias.

Resolved secrets are registered with `secrets` the moment they are read, so no later writer can
leak them. This module never opens a connection: it only says where to connect and how.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from sqlalchemy.engine import URL, make_url

from osiris_dagster.errors import ConnectionProfileError
from osiris_dagster.project import ProjectLayout
from osiris_dagster.schemas_dir import SCHEMAS_DIR
from osiris_dagster.secrets import is_secret_key, mask_secrets, register_secret

_ENV_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<fallback>[^}]*))?\}")
REFERENCE = re.compile(r"^@(?P<family>[a-z][a-z0-9_]*)\.(?P<alias>[A-Za-z0-9_\-]+)$")

# SQLAlchemy driver per SQL family, so a profile can give host/user/... instead of a URL.
_SQL_DRIVERS = {"mysql": "mysql+pymysql", "postgres": "postgresql+psycopg"}
SQL_FAMILIES = frozenset({"mysql", "postgres", "sqlite", "sql"})
DEMO_DATABASES = frozenset({"movies"})


@dataclass(frozen=True)
class Connection:
    """One resolved connection profile (secrets already substituted and registered)."""

    family: str
    alias: str
    fields: Mapping[str, Any]
    source_file: Path

    @property
    def reference(self) -> str:
        return f"@{self.family}.{self.alias}"

    def masked_fields(self) -> dict[str, Any]:
        return mask_secrets(dict(self.fields))

    @property
    def demo_database(self) -> str | None:
        return self.fields.get("demo")

    def sqlalchemy_url(self, project: ProjectLayout) -> URL:
        """The SQLAlchemy URL of a SQL connection (the demo database path included)."""
        fields = self.fields
        if self.family not in SQL_FAMILIES:
            raise ConnectionProfileError(
                str(self.source_file), f"connections.{self.family}.{self.alias}", "is not a SQL connection"
            )
        if "url" in fields:
            return make_url(str(fields["url"]))
        if self.family == "sqlite":
            if self.demo_database:
                return make_url(f"sqlite:///{demo_database_path(project, self.demo_database)}")
            return make_url(f"sqlite:///{project.resolve(str(fields['path']))}")
        return URL.create(
            _SQL_DRIVERS[self.family],
            username=fields.get("user"),
            password=fields.get("password") or None,
            host=fields.get("host"),
            port=int(fields["port"]) if fields.get("port") not in (None, "") else None,
            database=fields.get("database"),
            query={k: str(v) for k, v in (fields.get("options") or {}).items()},
        )


def demo_database_path(project: ProjectLayout, name: str) -> Path:
    return project.state_dir / "demo" / f"{name}.sqlite"


class ConnectionProfiles:
    """The parsed (not yet env-resolved) contents of one connections file."""

    def __init__(self, path: Path, profiles: dict[str, dict[str, dict[str, Any]]]) -> None:
        self.path = path
        self.profiles = profiles

    def aliases(self, family: str) -> list[str]:
        return sorted(self.profiles.get(family, {}))

    def choose_alias(self, family: str, alias: str | None, *, file: str, field: str) -> str:
        """Apply the default-alias rules; `file` and `field` name the reference being resolved."""
        aliases = self.profiles.get(family)
        if not aliases:
            raise ConnectionProfileError(
                file,
                field,
                f"no connections of family '{family}' in {self.path}",
            )
        if alias is not None:
            if alias not in aliases:
                raise ConnectionProfileError(
                    file,
                    field,
                    f"unknown connection '@{family}.{alias}' (known: "
                    + ", ".join(f"@{family}.{a}" for a in sorted(aliases))
                    + f"; defined in {self.path})",
                )
            return alias
        defaults = [name for name, fields in aliases.items() if fields.get("default") is True]
        if len(defaults) == 1:
            return defaults[0]
        if len(defaults) > 1:
            raise ConnectionProfileError(
                str(self.path), f"connections.{family}", f"several aliases are default: {', '.join(defaults)}"
            )
        if "default" in aliases:
            return "default"
        raise ConnectionProfileError(
            file,
            field,
            f"no default connection for family '{family}'; name one of: "
            + ", ".join(f"@{family}.{a}" for a in sorted(aliases)),
        )

    def resolve(self, family: str, alias: str, environ: Mapping[str, str] | None = None) -> Connection:
        """Substitute `${VAR}`s of one alias and register every secret it holds."""
        environ = os.environ if environ is None else environ
        raw = self.profiles[family][alias]
        resolved: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "default":
                continue
            field = f"connections.{family}.{alias}.{key}"
            resolved[key] = _substitute(value, environ, file=self.path, field=field, owner=f"{family}.{alias}")
            if is_secret_key(key):
                register_secret(resolved[key])
            if key in {"url", "pg_dsn", "dsn"} and isinstance(resolved[key], str):
                _register_url_password(resolved[key])
        return Connection(family=family, alias=alias, fields=resolved, source_file=self.path)


def parse_reference(reference: str, *, file: str, field: str) -> tuple[str, str]:
    match = REFERENCE.match(reference)
    if not match:
        raise ConnectionProfileError(
            file, field, f"'{reference}' is not a connection reference of the form @family.alias"
        )
    return match["family"], match["alias"]


def load_profiles(path: Path) -> ConnectionProfiles:
    """Read and schema-check a connections file (exit-2 errors name the file and field).

    Parsed once per version of the file (path, mtime, size): every step of a run resolves its
    connection through here, and re-reading and re-validating the YAML each time is wasted work.
    """
    if not path.is_file():
        raise ConnectionProfileError(str(path), "", "connections file not found")
    stat = path.stat()
    return _load_profiles(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=16)
def _load_profiles(path: Path, _mtime_ns: int, _size: int) -> ConnectionProfiles:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConnectionProfileError(
            str(path), _yaml_position(error), f"invalid YAML: {_yaml_problem(error)}"
        ) from None
    errors = sorted(_connections_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        raise ConnectionProfileError(str(path), _json_path(error.absolute_path), error.message)
    return ConnectionProfiles(path, document.get("connections") or {})


@cache
def _connections_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS_DIR / "connections.schema.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def _substitute(value: Any, environ: Mapping[str, str], *, file: Path, field: str, owner: str) -> Any:
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name in environ:
            return environ[name]
        if match["fallback"] is not None:
            return match["fallback"]
        raise ConnectionProfileError(
            str(file), field, f"environment variable {name} is not set (needed by connection {owner})"
        )

    return _ENV_REF.sub(replace, value)


def _register_url_password(url: str) -> None:
    try:
        password = make_url(url).password
    except Exception:  # not a SQLAlchemy URL (e.g. an https:// API URL): nothing to register
        return
    if password:
        register_secret(str(password))


def _json_path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _yaml_position(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(document)"


def _yaml_problem(error: yaml.YAMLError) -> str:
    return str(getattr(error, "problem", None) or error)
