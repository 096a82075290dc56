"""The one masking policy for every byte the product writes.

Two complementary rules, because neither alone is enough:

* **by key** — a mapping value whose key names a secret (``password``, ``*_key``, ``token``,
  ``dsn``, ...) is replaced by ``***`` whatever it contains;
* **by value** — every secret resolved from the environment is registered here, and any
  string anywhere (an exception message echoing a connection URL, a log line) has each
  registered value replaced by ``***`` — the value itself and the forms other code writes it
  in: percent-encoded (``quote``, ``quote_plus``, SQLAlchemy's URL rendering), JSON-escaped
  (once and twice: Dagster stores serialized errors inside serialized events) and Python-repr
  escaped. A password holding ``@``, ``\\`` or a quote is then masked whole wherever it lands.
  URL passwords (``scheme://user:pw@host``) are masked even when the value was never registered.

Every writer (session events, metrics, cleaned configs, Python logs, Dagster metadata and
failure messages) goes through `mask_secrets` / `mask_text`. This module never decides *where*
things are written; it only makes them safe to write.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

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
# Names that end like a secret but name columns: a table's key is structure, not a credential.
NOT_SECRET_KEY_NAMES = frozenset(
    {"primary_key", "primary_keys", "foreign_key", "foreign_keys", "unique_key", "sort_key", "partition_key"}
)

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s/]+)(?P<at>@)")

_registry_lock = threading.Lock()
_registered: set[str] = set()
# Every written form of every registered secret, longest first (recomputed on registration,
# which happens a handful of times per process; masking happens on every event).
_masked_forms: tuple[str, ...] = ()
# Secrets shorter than this are not masked by value: masking "1" or "ab" everywhere would
# shred ordinary output while protecting nothing (such a value is not a credential).
_MIN_MASKED_LENGTH = 4


def is_secret_key(key: str) -> bool:
    """Whether a config or profile key names a secret (``password``, ``service_role_key``, ...)."""
    lowered = key.lower()
    if lowered in NOT_SECRET_KEY_NAMES:
        return False
    return lowered in SECRET_KEY_NAMES or lowered.endswith(_SECRET_SUFFIXES)


def register_secret(value: object) -> None:
    """Remember a resolved secret so that `mask_text` removes it from any string — and from
    every Python log record created in this process from now on."""
    global _masked_forms
    if isinstance(value, str) and len(value) >= _MIN_MASKED_LENGTH:
        with _registry_lock:
            if value in _registered:
                return
            _registered.add(value)
            forms = set(_masked_forms) | written_forms(value)
            _masked_forms = tuple(sorted(forms, key=len, reverse=True))
        _install_log_record_masking()


def written_forms(secret: str) -> set[str]:
    """The ways a secret's value can appear in text the product or its libraries write."""
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote(secret, safe=" +"),  # SQLAlchemy's URL.render_as_string
        quote_plus(secret),
        quote_plus(secret, safe=""),
        repr(secret)[1:-1],
        secret.encode("unicode_escape").decode("ascii"),
    }
    for _ in range(2):  # JSON inside JSON: a serialized error inside a serialized event
        forms |= {json.dumps(form)[1:-1] for form in forms} | {
            json.dumps(form, ensure_ascii=False)[1:-1] for form in forms
        }
    return {form for form in forms if len(form) >= _MIN_MASKED_LENGTH}


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
    for form in _masked_forms:
        if form in text:
            text = text.replace(form, MASK)
    if "://" not in text or "@" not in text:  # what every match contains: the pattern has no
        return text  # literal to skip ahead by (60-150 µs per relayed 2 KB event; few name a URL)
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


_log_masking_installed = False


def _install_log_record_masking() -> None:
    """Mask every log record at creation, whoever logs it (our drivers, Dagster, httpx, ...).

    A filter on our own loggers would miss records from libraries that echo a connection
    string; the record factory sees them all, before any handler (console, Dagster's captured
    logs) does. Installed only once a secret exists, so processes without secrets pay nothing.
    """
    global _log_masking_installed
    with _registry_lock:
        if _log_masking_installed:
            return
        _log_masking_installed = True
    make_record = logging.getLogRecordFactory()

    def masked_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is passed on as logging itself would
            return record
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return record

    logging.setLogRecordFactory(masked_record)
