"""One HTTP request/response pair, on top of ``http.server``, as the API modules need it.

``BaseHTTPRequestHandler`` leaves the parts that matter for the SDK to us: chunked
request bodies (pyqwest streams the ``process.Process/Start`` body chunked), exact
``Content-Length`` on every response (HTTP/1.1 keep-alive would otherwise hang the
client), and chunked streaming responses flushed per message.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import socket
import struct
import zlib
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

# Uploads are held in memory (the SDK's own multipart path does the same); a cap
# keeps a runaway client from exhausting the dev machine.
MAX_BODY_BYTES = 1024 * 1024 * 1024


class BadRequest(Exception):
    """Malformed HTTP framing; answered with 400 and the connection closed."""


class Exchange:
    """Request accessors and response writers for one request on a keep-alive connection."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self._handler = handler
        split = urlsplit(handler.path)
        self.method = handler.command
        self.path = split.path
        self.query: dict[str, list[str]] = parse_qs(split.query, keep_blank_values=True)
        self.headers = handler.headers
        self._body: bytes | None = None
        self.response_started = False
        self._chunked_response = False

    def query_value(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    # -- request body -------------------------------------------------------------
    def body(self) -> bytes:
        """The whole request body, de-chunked and decoded (gzip/deflate)."""
        if self._body is None:
            raw = self._read_raw_body()
            encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
            if encoding == "gzip":
                try:
                    raw = gzip.decompress(raw)
                except (OSError, EOFError) as exc:
                    raise BadRequest(f"invalid gzip body: {exc}") from exc
            elif encoding == "deflate":
                raw = zlib.decompress(raw)
            elif encoding not in ("identity", ""):
                raise BadRequest(f"unsupported Content-Encoding {encoding!r}")
            self._body = raw
        return self._body

    def drain(self) -> None:
        """Consume an unread body so the next request on the connection parses."""
        if self._body is None:
            self._body = self._read_raw_body()

    def read_partial_body(self, fraction: float) -> int:
        """Read about ``fraction`` of the raw body and stop (fault injection); bytes read.

        A ``Content-Length`` body is cut at that fraction; a chunked body (length
        unknown) after its first chunk.
        """
        rfile = self._handler.rfile
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            line = rfile.readline(65537)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return len(line)
            return len(line) + len(rfile.read(size))
        length = int(self.headers.get("Content-Length") or 0)
        return len(rfile.read(int(length * fraction))) if length else 0

    def _read_raw_body(self) -> bytes:
        rfile = self._handler.rfile
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts: list[bytes] = []
            total = 0
            while True:
                line = rfile.readline(65537)
                if not line:
                    raise BadRequest("connection closed inside a chunked body")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError as exc:
                    raise BadRequest("invalid chunk size") from exc
                if size == 0:
                    # trailers, then the blank line
                    while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > MAX_BODY_BYTES:
                    raise BadRequest("request body too large")
                parts.append(rfile.read(size))
                rfile.readline(65537)  # CRLF after the chunk
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise BadRequest("request body too large")
        return rfile.read(length) if length else b""

    # -- responses -------------------------------------------------------------
    def send(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        handler = self._handler
        self.response_started = True
        handler.send_response(status)
        if content_type:
            handler.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if body and self.method != "HEAD":
            handler.wfile.write(body)

    def send_json(self, status: int, payload: Any, *, content_type: str = "application/json") -> None:
        self.send(status, json.dumps(payload, separators=(",", ":")).encode(), content_type=content_type)

    def send_api_error(self, status: int, message: str) -> None:
        """E2B REST / envd HTTP error body: ``{"code": <status>, "message": ...}``."""
        self.send_json(status, {"code": status, "message": message})

    def start_chunked(self, status: int, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        handler = self._handler
        self.response_started = True
        self._chunked_response = True
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()

    def write_chunk(self, data: bytes) -> None:
        """One HTTP chunk in a single write (with TCP_NODELAY: one packet, no delay)."""
        if data:
            self._handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_chunked(self) -> None:
        self._handler.wfile.write(b"0\r\n\r\n")

    def close_connection(self) -> None:
        self._handler.close_connection = True

    def abort(self) -> None:
        """Reset the TCP connection now (fault injection): the peer sees ECONNRESET.

        ``SO_LINGER`` 0 makes close() send RST instead of FIN. The socket object is
        detached first and its fd closed directly: ``rfile``/``wfile`` still hold
        references that would otherwise defer the close until the handler returns,
        and a detached socket can never close a reused fd number later.
        """
        handler = self._handler
        handler.close_connection = True
        sock: socket.socket = handler.connection
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        fd = sock.detach()
        if fd >= 0:
            os.close(fd)
