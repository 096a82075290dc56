"""The one error a source raises: ``SourceError``, whose message is safe to log once scrubbed.

Readers raise it with the driver's message (which may echo a connection string);
``sql_extract.extract_to_staging`` scrubs the URL's password from it and re-raises it without the
driver's exception attached.
"""

from __future__ import annotations

__all__ = ["SourceError"]


class SourceError(Exception):
    """The source could not be read; the message is safe to log (no password) once scrubbed."""
