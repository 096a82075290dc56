"""Where the JSON Schemas live: the top-level `schemas/` folder, the one source of truth.

`osiris_dagster/schemas` is a link to it, so the installed package and a code bundle uploaded
to a sandbox find the very same files.
"""

from pathlib import Path

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"
