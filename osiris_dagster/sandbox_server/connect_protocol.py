"""Connect protocol pieces envd speaks: envelope framing, error codes, proto3-JSON helpers.

The e2b SDK (2.63) talks to envd through ``connectrpc`` with a JSON codec
(``e2b/envd/client_shared.py`` ``_ProtoJSONCodec``) and no compression
(``ENVD_RPC_COMPRESSION``). So the server only needs the Connect JSON flavour:

* unary: ``application/json`` body in, ``application/json`` body out; an error is a
  non-200 status with ``{"code": "<snake_case code>", "message": ...}``;
* server streaming: ``application/connect+json`` with enveloped messages
  (1 flag byte + 4-byte big-endian length + JSON); the stream always ends with an
  end-of-stream envelope (flag ``0x02``) that carries ``{}`` or ``{"error": {...}}``,
  and the HTTP status stays 200.

Messages are built as plain dicts following proto3-JSON rules (camelCase names,
enums by name, ``bytes`` base64, 64-bit ints as strings, zero values omitted) rather
than with the SDK's generated classes: the wire format is the contract, and
keeping the server independent of ``e2b`` internals means an SDK bump cannot
silently change what the server sends (the contract tests catch drift instead).
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

# Connect flag bits (https://connectrpc.com/docs/protocol/#streaming-request).
FLAG_COMPRESSED = 0x01
FLAG_END_STREAM = 0x02

# Connect error code -> HTTP status for unary errors (Connect protocol spec table).
# The SDK's connectrpc client reads the JSON ``code`` of a unary error; the status
# matters for ``PlainHTTPErrorTransport`` (e2b/envd/client_sync/__init__.py), which
# lets a body with a *valid string* code through to connectrpc unchanged.
CODE_TO_HTTP_STATUS: dict[str, int] = {
    "canceled": 499,
    "unknown": 500,
    "invalid_argument": 400,
    "deadline_exceeded": 504,
    "not_found": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "resource_exhausted": 429,
    "failed_precondition": 400,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "data_loss": 500,
    "unauthenticated": 401,
}


class ConnectError(Exception):
    """An RPC failure with a Connect code, turned into the wire error by the server.

    Handlers raise this instead of returning error tuples so every envd RPC maps
    failures the same way (the SDK branches on the code: ``not_found`` ->
    ``FileNotFoundException``/``exists() == False``, ``already_exists`` ->
    ``make_dir() == False``, ``deadline_exceeded`` -> ``TimeoutException``).
    """

    def __init__(self, code: str, message: str) -> None:
        if code not in CODE_TO_HTTP_STATUS:
            raise ValueError(f"unknown Connect code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return CODE_TO_HTTP_STATUS[self.code]

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def encode_envelope(message: dict[str, Any], *, end_stream: bool = False) -> bytes:
    """Frame one JSON message as a Connect streaming envelope."""
    payload = json.dumps(message, separators=(",", ":")).encode("utf-8")
    flags = FLAG_END_STREAM if end_stream else 0
    return struct.pack(">BI", flags, len(payload)) + payload


def end_of_stream(error: ConnectError | None = None) -> bytes:
    """The mandatory last envelope of a server stream (``{}`` or ``{"error": ...}``)."""
    return encode_envelope({"error": error.to_json()} if error else {}, end_stream=True)


def decode_envelopes(body: bytes) -> list[dict[str, Any]]:
    """Split a streaming request body into its JSON messages.

    The SDK sends ``process.Process/Start`` as a server-streaming call, so its single
    request message arrives enveloped (and HTTP-chunked: pyqwest streams the body).
    """
    messages: list[dict[str, Any]] = []
    offset = 0
    while offset < len(body):
        if len(body) - offset < 5:
            raise ConnectError("invalid_argument", "truncated Connect envelope header")
        flags, length = struct.unpack_from(">BI", body, offset)
        offset += 5
        chunk = body[offset : offset + length]
        if len(chunk) != length:
            raise ConnectError("invalid_argument", "truncated Connect envelope payload")
        offset += length
        if flags & FLAG_COMPRESSED:
            raise ConnectError("unimplemented", "compressed Connect envelopes are not supported")
        if flags & FLAG_END_STREAM:
            continue
        messages.append(parse_json_message(chunk))
    return messages


def parse_json_message(raw: bytes) -> dict[str, Any]:
    """Parse one proto3-JSON message; an empty body is the empty message."""
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise ConnectError("invalid_argument", f"request is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ConnectError("invalid_argument", "request JSON must be an object")
    return parsed


def b64encode(data: bytes) -> str:
    """proto3 JSON encodes ``bytes`` fields as standard base64 with padding."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Accept standard or URL-safe base64, padded or not (proto3 JSON allows both)."""
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))


def get_uint(message: dict[str, Any], name: str, default: int = 0) -> int:
    """Read an integer field that proto3 JSON may send as a number or a string."""
    value = message.get(name, default)
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ConnectError("invalid_argument", f"field {name!r} must be an integer") from exc
