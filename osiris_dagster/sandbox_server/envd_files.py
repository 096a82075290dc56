"""envd's plain HTTP file transfer API: ``GET /files`` and ``POST /files``.

What the SDK sends (``e2b/sandbox_sync/filesystem/filesystem.py``):

* download: ``GET /files?path=...`` -> raw bytes; a 404 JSON error becomes
  ``FileNotFoundException`` (``_FILESYSTEM_HTTP_ERROR_MAP``).
* upload, multipart: one ``file`` part per entry; with a single entry the target is
  the ``path`` query parameter, with several (``write_files``) each part's filename
  is its target path.
* upload, octet-stream (used for file-like/iterable data or ``gzip=True``): the body
  is the content, ``path`` is required, ``Content-Encoding: gzip`` may be set.

Both upload forms answer ``[{"name", "type": "file", "path"}]`` and create parent
directories, like envd.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from .connect_protocol import CODE_TO_HTTP_STATUS, ConnectError
from .faults import FaultInjector
from .http_exchange import BadRequest, Exchange
from .sandbox import Sandbox

_DOWNLOAD_CHUNK = 256 * 1024
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_DISPOSITION_PARAM = re.compile(r';\s*([a-zA-Z*]+)="((?:[^"\\]|\\.)*)"|;\s*([a-zA-Z*]+)=([^;\s]+)')


def handle_files(
    exchange: Exchange,
    sandbox: Sandbox,
    *,
    cut_at_fraction: float | None = None,
    faults: FaultInjector | None = None,
) -> None:
    """Serve one transfer; with ``cut_at_fraction`` (fault injection) reset it mid-body."""
    try:
        if exchange.method == "GET":
            exchange.drain()
            return _download(exchange, sandbox, cut_at_fraction, faults)
        if exchange.method == "POST":
            if cut_at_fraction is not None and faults is not None:
                return _reset_upload(exchange, sandbox, cut_at_fraction, faults)
            return _upload(exchange, sandbox)
        exchange.drain()
        exchange.send_api_error(405, f"method {exchange.method} not allowed on /files")
    except ConnectError as exc:
        exchange.send_api_error(CODE_TO_HTTP_STATUS[exc.code], exc.message)
    except BadRequest as exc:
        exchange.send_api_error(400, str(exc))


def _download(
    exchange: Exchange, sandbox: Sandbox, cut_at_fraction: float | None, faults: FaultInjector | None
) -> None:
    path = exchange.query_value("path")
    if not path:
        raise ConnectError("invalid_argument", "the path query parameter is required")
    host = sandbox.paths.to_host(path)
    if host.is_dir():
        raise ConnectError("invalid_argument", f"path {path!r} is a directory")
    try:
        handle = host.open("rb")
    except FileNotFoundError as exc:
        raise ConnectError("not_found", f"file {path!r} not found") from exc
    except OSError as exc:
        raise ConnectError("invalid_argument", f"cannot read {path!r}: {exc.strerror}") from exc
    with handle:
        size = os.fstat(handle.fileno()).st_size
        exchange.response_started = True
        handler = exchange._handler  # streaming a file is the one raw write we need
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(size))
        handler.end_headers()
        remaining = size
        if cut_at_fraction is not None and faults is not None:
            remaining = int(size * cut_at_fraction)  # send this much, then reset
        while remaining > 0:
            chunk = handle.read(min(_DOWNLOAD_CHUNK, remaining))
            if not chunk:  # file shrank while we read: the framing is now broken
                exchange.close_connection()
                return
            handler.wfile.write(chunk)
            remaining -= len(chunk)
        if cut_at_fraction is not None and faults is not None:
            exchange.abort()
            sent = int(size * cut_at_fraction)
            faults.record(sandbox.sandbox_id, "download", f"{path} reset after {sent} of {size} bytes")


def _reset_upload(exchange: Exchange, sandbox: Sandbox, cut_at_fraction: float, faults: FaultInjector) -> None:
    """Fault injection: read part of the request body, then reset; nothing is written."""
    path = exchange.query_value("path") or "(multipart)"
    read = exchange.read_partial_body(cut_at_fraction)
    exchange.abort()
    faults.record(sandbox.sandbox_id, "upload", f"{path} reset after {read} request body bytes")


def _upload(exchange: Exchange, sandbox: Sandbox) -> None:
    content_type = exchange.headers.get("Content-Type") or ""
    query_path = exchange.query_value("path")
    entries: list[tuple[str, bytes]]
    if content_type.lower().startswith("multipart/form-data"):
        parts = _parse_multipart(exchange.body(), content_type)
        if not parts:
            raise BadRequest("multipart body has no file part")
        if query_path is not None and len(parts) == 1:
            entries = [(query_path, parts[0][1])]
        else:
            entries = []
            for filename, data in parts:
                if not filename:
                    raise BadRequest("multipart part without a filename and no path parameter")
                entries.append((filename, data))
    else:
        if not query_path:
            raise BadRequest("the path query parameter is required for an octet-stream upload")
        entries = [(query_path, exchange.body())]
    results: list[dict[str, Any]] = []
    for sandbox_path, data in entries:
        host = sandbox.paths.to_host(sandbox_path)
        _write_atomically(host, data, sandbox_path)
        results.append({"name": host.name, "type": "file", "path": sandbox.paths.to_sandbox(host)})
    exchange.send_json(200, results)


def _write_atomically(host: Path, data: bytes, sandbox_path: str) -> None:
    """Write via a temp file + rename so a concurrent reader never sees half a file."""
    if host.is_dir():
        raise ConnectError("invalid_argument", f"path {sandbox_path!r} is a directory")
    try:
        host.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ConnectError("invalid_argument", f"a parent of {sandbox_path!r} is not a directory") from exc
    fd, tmp = tempfile.mkstemp(dir=host.parent, prefix=f".{host.name}.upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, host)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _parse_multipart(body: bytes, content_type: str) -> list[tuple[str | None, bytes]]:
    """Minimal ``multipart/form-data`` parser: (filename, data) of each part.

    ``cgi`` is deprecated and ``email`` mangles binary payloads, and the SDK (httpx)
    always sends well-formed bodies, so a strict split on the boundary is enough.
    """
    match = _BOUNDARY.search(content_type)
    if not match:
        raise BadRequest("multipart Content-Type without a boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    parts: list[tuple[str | None, bytes]] = []
    for segment in body.split(delimiter)[1:]:
        if segment.startswith(b"--"):
            break  # closing delimiter
        if segment.startswith(b"\r\n"):
            segment = segment[2:]
        head, sep, data = segment.partition(b"\r\n\r\n")
        if not sep:
            raise BadRequest("malformed multipart part")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        filename: str | None = None
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                params = {
                    (m.group(1) or m.group(3)).lower(): (m.group(2) if m.group(1) else m.group(4))
                    for m in _DISPOSITION_PARAM.finditer(value)
                }
                raw_name = params.get("filename")
                if raw_name is not None:
                    # httpx escapes '"' as %22 and '\\' as '\\\\' (httpx/_multipart.py)
                    filename = raw_name.replace("%22", '"').replace("\\\\", "\\")
        parts.append((filename, data))
    return parts
