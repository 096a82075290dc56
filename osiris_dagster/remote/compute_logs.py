"""A remote run's captured stdout/stderr, put into the host's compute-log storage.

The relayed `LOGS_CAPTURED` events point the UI at log keys ``[run_id, "compute_logs", <file
key>]``; writing the sandbox's files under the same keys makes the UI show the remote output.
Text is masked on the way in. With the local compute-log manager the files are replaced whole
(so a second copy changes nothing); other managers get the text through `open_log_stream` once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dagster import DagsterInstance
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager

from osiris_dagster.secrets import mask_text

_IO_TYPES = {extension: io_type for io_type, extension in IO_TYPE_EXTENSION.items()}
_COMPLETE = "complete"


def store_compute_logs(instance: DagsterInstance, run_id: str, files: Mapping[str, bytes]) -> int:
    """Copy ``<file key>.<out|err|complete>`` files into the host's compute logs; return files stored."""
    manager = instance.compute_log_manager
    stored = 0
    for name, data in sorted(files.items()):
        file_key, _, extension = name.rpartition(".")
        if not file_key or (extension not in _IO_TYPES and extension != _COMPLETE):
            continue
        log_key = [run_id, "compute_logs", file_key]
        text = mask_text(data.decode("utf-8", errors="replace"))
        if isinstance(manager, LocalComputeLogManager):
            path = Path(manager.get_captured_local_path(log_key, extension))
            path.parent.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.tmp")
            temp.write_text(text, encoding="utf-8")
            os.replace(temp, path)
        elif extension in _IO_TYPES and not manager.is_capture_complete(log_key):
            with manager.open_log_stream(log_key, _IO_TYPES[extension]) as stream:
                if stream is not None:
                    stream.write(text)
        else:
            continue
        stored += 1
    return stored
