"""Where the JSON Schemas live: `osiris_dagster/schemas/`, package data of the wheel.

The files are real files inside the package (not a link out of it), so an installed wheel, an
editable checkout and a code bundle uploaded to a sandbox all read the very same schemas. The
repository's top-level `schemas/` is a symbolic link to this folder, kept for readers who look
for the catalogue at the top of the repository; there is still one copy of each file.
"""

from pathlib import Path

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"
