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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema
import yaml
from sqlalchemy.engine import URL, make_url

from osiris_dagster.errors import ConnectionProfileError
from osiris_dagster.project import ProjectLayout
from osiris_dagster.schemas_dir import SCHEMAS_DIR
from osiris_dagster.secrets import is_secret_key, mask_secrets, register_secret
from osiris_dagster.strict_yaml import DuplicateKeyError, load_yaml

_ENV_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<fallback>[^}]*))?\}")
# Fields holding a URL / DSN, whose user-info password is a secret even under a non-secret key.
_URL_KEYS = frozenset({"url", "pg_dsn", "dsn"})
# The password as written in a URL (greedy to the last '@': a raw '@' may sit in the password).
_URL_USERINFO_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^:/@]*:(?P<password>[^/]*)@")
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
            owner = f"{family}.{alias}"
            if key in _URL_KEYS and isinstance(value, str):
                resolved[key] = _substitute_url(value, environ, file=self.path, field=field, owner=owner)
                _register_url_password(resolved[key])
            else:
                resolved[key] = _substitute(value, environ, file=self.path, field=field, owner=owner)
            if is_secret_key(key):
                register_secret(resolved[key])
        if "port" in resolved:
            _check_port(resolved["port"], raw["port"], file=self.path, field=f"connections.{family}.{alias}.port")
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
        document = load_yaml(path.read_text(encoding="utf-8"))
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


def _substitute(
    value: Any,
    environ: Mapping[str, str],
    *,
    file: Path,
    field: str,
    owner: str,
    encode: Callable[[str], str] = str,
) -> Any:
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name in environ:
            return encode(environ[name])
        if match["fallback"] is not None:
            return encode(match["fallback"])
        raise ConnectionProfileError(
            str(file), field, f"environment variable {name} is not set (needed by connection {owner})"
        )

    return _ENV_REF.sub(replace, value)


def _substitute_url(template: str, environ: Mapping[str, str], *, file: Path, field: str, owner: str) -> str:
    """Substitute a URL's `${VAR}`s, percent-encoding those in its user-info part.

    ``url: mysql+pymysql://app:${DB_PASSWORD}@host/db`` must reach the driver with the password
    exactly as the variable holds it, whatever characters it has (``@ : / % # ?``): so a variable
    between ``://`` and the host's ``@`` is taken as raw text and encoded. A variable that holds
    the whole URL (``url: ${DATABASE_URL}``) is a URL already and is used as it is.
    """
    scheme_end = template.find("://")
    if scheme_end < 0:
        return str(_substitute(template, environ, file=file, field=field, owner=owner))
    start = scheme_end + 3
    at = template.find("@", start)
    slash = template.find("/", start)
    if at < 0 or (0 <= slash < at):
        return str(_substitute(template, environ, file=file, field=field, owner=owner))
    return (
        str(_substitute(template[:start], environ, file=file, field=field, owner=owner))
        + str(_substitute(template[start:at], environ, file=file, field=field, owner=owner, encode=_quote_all))
        + str(_substitute(template[at:], environ, file=file, field=field, owner=owner))
    )


def _quote_all(text: str) -> str:
    return quote(text, safe="")


def _check_port(value: Any, template: Any, *, file: Path, field: str) -> None:
    """A port is a whole number 1-65535; a bad one is refused at validation, naming its variable."""
    text = str(value).strip()
    if text.isdigit() and 1 <= int(text) <= 65535:
        return
    names = [m["name"] for m in _ENV_REF.finditer(template)] if isinstance(template, str) else []
    source = f" (from ${{{names[0]}}})" if names else ""
    raise ConnectionProfileError(str(file), field, f"'{value}'{source} is not a port number (1-65535)")


def _register_url_password(url: str) -> None:
    """Register a URL's password both decoded (as the driver sends it) and as written in the URL."""
    try:
        password = make_url(url).password
    except Exception:  # not a SQLAlchemy URL (e.g. an https:// API URL): nothing to register
        password = None
    if password:
        register_secret(str(password))
    written = _URL_USERINFO_PASSWORD.match(url)
    if written:
        register_secret(written["password"])


def _json_path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _yaml_position(error: yaml.YAMLError) -> str:
    if isinstance(error, DuplicateKeyError):
        return error.field
    mark = getattr(error, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(document)"


def _yaml_problem(error: yaml.YAMLError) -> str:
    return str(getattr(error, "problem", None) or error)
