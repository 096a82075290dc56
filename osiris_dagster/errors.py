"""Error types a user can act on.

Every error the product raises about user input names the file and the field it is about, so
the message alone tells the user where to look. The CLI maps `InputError` to exit code 2.
"""

from __future__ import annotations


class InputError(Exception):
    """Bad user input (a pipeline, a connection profile, a parameter): exit code 2."""

    def __init__(self, file: str, field: str, message: str) -> None:
        self.file = file
        self.field = field
        self.message = message
        super().__init__(f"{file}: {field}: {message}" if field else f"{file}: {message}")


class PipelineSpecError(InputError):
    """An OML pipeline file that does not validate."""


class ConnectionProfileError(InputError):
    """A connection profile that is missing, malformed, or references an unset variable."""


class StepFailedError(Exception):
    """A step failed at run time; the message has already been masked.

    Raised *outside* the `except` block that caught the original error, so no unmasked
    exception rides along as `__context__` into Dagster's stored failure event.
    """
