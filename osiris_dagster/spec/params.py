"""`${params.NAME}` references: which value wins, and substituting it.

Precedence, lowest first: the pipeline's own `params:` defaults, then `OSIRIS_PARAM_NAME`
environment variables, then values given for one run (the CLI's `--param`, Dagster run
config). A reference that is the whole string takes the parameter's value with its type
(so `batch_size: ${params.batch}` can be an integer); an embedded reference is text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

PARAM_ENV_PREFIX = "OSIRIS_PARAM_"
_REFERENCE = re.compile(r"\$\{params\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}")


class UnknownParamError(Exception):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        known_text = ", ".join(known) if known else "none are declared"
        super().__init__(f"unknown parameter '{name}' (declared in params: {known_text})")


def effective_params(
    defaults: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    environ = os.environ if environ is None else environ
    values = dict(defaults)
    for key, value in environ.items():
        if key.startswith(PARAM_ENV_PREFIX):
            name = key[len(PARAM_ENV_PREFIX) :]
            # Match a declared name case-insensitively: env vars are conventionally upper case.
            declared = next((d for d in values if d.upper() == name.upper()), name.lower())
            values[declared] = _scalar_from_text(value)
    values.update(overrides or {})
    return values


def referenced_params(value: Any) -> set[str]:
    if isinstance(value, str):
        return {m["name"] for m in _REFERENCE.finditer(value)}
    if isinstance(value, dict):
        return set().union(*(referenced_params(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(referenced_params(v) for v in value)) if value else set()
    return set()


def render(value: Any, params: Mapping[str, Any]) -> Any:
    """Substitute parameter references in a config tree (raises `UnknownParamError`)."""
    if isinstance(value, dict):
        return {key: render(item, params) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, params) for item in value]
    if not isinstance(value, str):
        return value
    whole = _REFERENCE.fullmatch(value)
    if whole:
        return _lookup(whole["name"], params)
    return _REFERENCE.sub(lambda m: str(_lookup(m["name"], params)), value)


def _lookup(name: str, params: Mapping[str, Any]) -> Any:
    if name not in params:
        raise UnknownParamError(name, sorted(params))
    return params[name]


def _scalar_from_text(text: str) -> Any:
    """`OSIRIS_PARAM_BATCH=500` means the number 500, as it would written in YAML."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, str | int | float | bool) else text
