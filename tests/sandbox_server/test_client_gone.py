"""A client that vanishes mid-exchange leaves no traceback on the server's console.

A killed supervisor, a reset stream or a Ctrl-C'd script closes its TLS tunnel without TLS's
close_notify; `osiris-dagster sandbox serve` printed a ``ssl.SSLEOFError`` traceback for each. The
client here is a raw socket speaking the same CONNECT + TLS the SDK speaks, then dropping the TCP
connection; the real SDK checks the server still answers afterwards.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time

import pytest
from e2b import Sandbox

from osiris_dagster.sandbox_server import LocalSandboxServer
from osiris_dagster.sandbox_trust import trust_local_ca

pytestmark = pytest.mark.sandbox


def _vanish(server: LocalSandboxServer, sent: bytes) -> None:
    """Open the SDK's tunnel, send ``sent`` inside it, then drop the TCP connection (no close_notify)."""
    port = int(server.url.rsplit(":", 1)[1])
    host = f"api.{server.domain}"
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
    assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    tls = ssl.create_default_context(cafile=str(trust_local_ca())).wrap_socket(raw, server_hostname=host)
    if sent:
        tls.sendall(sent)
    plain = socket.socket(fileno=tls.detach())
    plain.shutdown(socket.SHUT_RDWR)
    plain.close()


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /sandboxes HTTP/1.1\r\nHost: x\r\n", b"GET /sandboxes HTTP/1.1\r\nHost: x\r\n\r\n"],
    ids=["before-the-request", "mid-headers", "before-the-answer"],
)
def test_a_client_gone_mid_exchange_is_no_error(
    server: LocalSandboxServer, sent: bytes, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="osiris_dagster.sandbox_server"):
        _vanish(server, sent)
        time.sleep(0.5)  # the handler thread meets the EOF
        Sandbox.list(**server.sdk_kwargs()).next_items()  # the server still answers

    assert "Traceback" not in capfd.readouterr().err
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
