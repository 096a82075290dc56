"""The one masking policy for every byte the product writes.

Two complementary rules, because neither alone is enough:

* **by key** — a mapping value whose key names a secret (``password``, ``*_key``, ``token``,
  ``dsn``, ...) is replaced by ``***`` whatever it contains;
* **by value** — every secret resolved from the environment is registered here, and any
  string anywhere (an exception message echoing a connection URL, a log line) has each
  registered value replaced by ``***``. URL passwords (``scheme://user:pw@host``) are masked
  even when the value was never registered.

Every writer (session events, metrics, cleaned configs, Python logs, Dagster metadata and
failure messages) goes through `mask_secrets` / `mask_text`. This module never decides *where*
things are written; it only makes them safe to write.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

MASK = "***"

# Keys that hold secrets, in OML step configs and connection profiles alike (Osiris's list,
# plus the connection-level names such profiles use).
SECRET_KEY_NAMES = frozenset(
    {
        "key",
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "api_key",
        "anon_key",
        "service_key",
        "service_role_key",
        "dsn",
        "pg_dsn",
        "connection_string",
    }
)
_SECRET_SUFFIXES = tuple(f"_{name}" for name in SECRET_KEY_NAMES)

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s/]+)(?P<at>@)")

_registry_lock = threading.Lock()
_registered: set[str] = set()
# Secrets shorter than this are not masked by value: masking "1" or "ab" everywhere would
# shred ordinary output while protecting nothing (such a value is not a credential).
_MIN_MASKED_LENGTH = 4


def is_secret_key(key: str) -> bool:
    """Whether a config or profile key names a secret (``password``, ``service_role_key``, ...)."""
    lowered = key.lower()
    return lowered in SECRET_KEY_NAMES or lowered.endswith(_SECRET_SUFFIXES)


def register_secret(value: object) -> None:
    """Remember a resolved secret so that `mask_text` removes it from any string."""
    if isinstance(value, str) and len(value) >= _MIN_MASKED_LENGTH:
        with _registry_lock:
            _registered.add(value)


def register_secrets(values: Iterable[object]) -> None:
    for value in values:
        register_secret(value)


def registered_secrets() -> frozenset[str]:
    with _registry_lock:
        return frozenset(_registered)


def mask_text(text: str) -> str:
    """Mask registered secret values and URL passwords inside free text."""
    if not text:
        return text
    # Longest first, so a secret containing another secret is masked whole.
    for secret in sorted(registered_secrets(), key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}", text)


def mask_secrets(value: Any) -> Any:
    """Return a masked deep copy of JSON-like data: secret keys blanked, secret values removed."""
    if isinstance(value, dict):
        return {
            key: (MASK if is_secret_key(str(key)) and val not in (None, "") else mask_secrets(val))
            for key, val in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_secrets(item) for item in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


class MaskingLogFilter(logging.Filter):
    """A logging filter that masks every record's rendered message in place.

    Installed on the loggers the product writes through, so that a driver's log line echoing a
    URL reaches no handler with the password in it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is still logged, as logging itself would
            return True
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
