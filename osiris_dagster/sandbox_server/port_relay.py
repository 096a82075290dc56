"""Forward TCP connections made to the sandbox bridge's address to the host's loopback.

An isolated sandbox reaches the host only at its bridge address (``10.213.N.1``); the test
databases listen on ``127.0.0.1`` only. A relay in the server process listens on
``<bridge address>:<port>`` and copies bytes both ways to ``127.0.0.1:<port>``, so a sandboxed
run reaches MariaDB at ``10.213.N.1:3306`` and never at ``127.0.0.1:3306`` - what a job in E2B's
cloud sees too (the database at some address that is not the sandbox's loopback).

Why a relay and not iptables DNAT: DNAT to 127.0.0.1 needs ``route_localnet=1`` on the bridge
and NAT rules in the host's tables, global state that outlives a ``kill -9``ed server and that
this container cannot even set up (no ``iptables`` binary). The relay dies with its process and
needs nothing but sockets. Its cost is one thread per direction per connection; connection
counts here are a handful per run. To the database a relayed client comes from 127.0.0.1, so
``root@localhost`` grants keep working.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024


class PortRelay:
    """One listening socket on ``listen_host:port``; each connection is piped to ``127.0.0.1:port``."""

    def __init__(self, listen_host: str, port: int) -> None:
        self.port = port
        self._listener = socket.create_server((listen_host, port), backlog=128)
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name=f"port-relay-{port}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), name=f"port-relay-{self.port}", daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        except OSError as exc:
            # The sandbox sees a reset, as it would for a database that is down.
            log.warning("port relay: 127.0.0.1:%s unreachable (%s)", self.port, exc)
            client.close()
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
        back.start()
        _pipe(client, upstream)
        back.join()
        client.close()
        upstream.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy until EOF, then half-close the sink (the other direction may still be talking)."""
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    try:
        while True:
            n = source.recv_into(buffer)
            if not n:
                break
            sink.sendall(view[:n])
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
    except OSError:
        # A reset on one side ends the other direction too (it would block forever otherwise).
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
