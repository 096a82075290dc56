"""The HTTP server: one loopback port serving both E2B's REST API and envd, over TLS.

The SDK is given ``domain`` and ``proxy`` (the supported settings; the URL settings are
deprecated): it tunnels every request with ``CONNECT api.<domain>:443`` or
``CONNECT <port>-<id>.<domain>:443`` to this port, and the server terminates TLS inside the
tunnel (``tls.py``). envd requests carry ``E2b-Sandbox-Id`` (``e2b/sandbox_sync/main.py``), which
selects the sandbox; the path tells REST from envd. Plain HTTP requests are still answered (old
clients, ``curl``) and counted apart (``requests_by_scheme``), so a test can prove a run made none.

stdlib ``ThreadingHTTPServer`` (one thread per connection) is enough and adds no
dependency; the details that make it fast and correct with the SDK's pyqwest
client are: HTTP/1.1 keep-alive (TLS ALPN offers ``http/1.1`` only), ``TCP_NODELAY`` (otherwise
Nagle + delayed ACK add ~40 ms per call), a listen backlog of 512 (30 parallel command streams
overflow the default 5), and chunked request bodies (see ``http_exchange``).
"""

from __future__ import annotations

import collections
import contextlib
import io
import ipaddress
import logging
import os
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from osiris_dagster.sandbox_trust import trust_local_ca

from . import envd_filesystem, envd_process
from .connect_protocol import ConnectError, end_of_stream, parse_json_message
from .envd_files import handle_files
from .faults import FaultInjector, FaultPlan
from .http_exchange import BadRequest, Exchange
from .network import HostBridge, NetworkMode, resolve_mode
from .rest_api import handle_rest, is_rest_path
from .sandbox import Sandbox, SandboxRegistry
from .tls import SANDBOX_DOMAIN, LocalCertificateAuthority

log = logging.getLogger(__name__)

LOCAL_API_KEY = "e2b_local_sandbox"
# A client that went away mid-exchange: routine (a killed supervisor, a reset stream, a test's
# fault), not an error of this server. Through a TLS tunnel it shows as the TLS layer's EOF.
_CLIENT_GONE = (
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)


def check_loopback_host(host: str) -> str:
    """Return the IPv4 loopback address to bind, refusing anything else.

    The server runs arbitrary commands for whoever reaches it, without auth: it must
    never listen on a reachable interface.
    """
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"refusing to bind {host!r}: the local sandbox server binds 127.0.0.1 only") from exc
    if not (address.version == 4 and address.is_loopback):
        raise ValueError(f"refusing to bind {host!r}: the local sandbox server binds IPv4 loopback only")
    return host


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone while its request line was read is routine; socketserver would print a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, _CLIENT_GONE):
            log.debug("local sandbox server: client %s went away: %r", client_address, error)
            return
        log.exception("local sandbox server: unhandled error for a request from %s", client_address)

    request_queue_size = 512

    def __init__(
        self,
        address: tuple[str, int],
        registry: SandboxRegistry,
        faults: FaultInjector | None,
        tls: ssl.SSLContext,
        domain: str,
        api_keys: frozenset[str] | None,
    ) -> None:
        self.registry = registry
        self.api_keys = api_keys
        self.faults = faults
        self.tls = tls
        self.domain = domain
        self.requests_by_scheme: collections.Counter[str] = collections.Counter()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            (self._connections.add if open_ else self._connections.discard)(connection)

    def close_connections(self) -> None:
        """End every open keep-alive connection: a stopped server must not answer on old ones."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _SocketWriter(io.BufferedIOBase):
    """Unbuffered writes with ``sendall`` (what ``StreamRequestHandler`` uses for plain sockets)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "osiris-local-e2b/1"
    server: _HTTPServer

    scheme = "http"

    def setup(self) -> None:
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.request, True)

    def do_CONNECT(self) -> None:
        """Open a tunnel to one of the domain's names and speak TLS in it, as E2B's hosts would."""
        host, _, port = self.path.rpartition(":")
        domain = self.server.domain
        if port != "443" or not (host == f"api.{domain}" or host.endswith(f".{domain}")):
            self.send_error(403, f"this server only answers as *.{domain}:443")
            self.close_connection = True
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        try:
            tls = self.server.tls.wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("local sandbox server: TLS handshake for %s failed: %s", host, exc)
            self.close_connection = True
            return
        # wrap_socket detached the plain socket (its fd now belongs to ``tls``): track the TLS one,
        # or a stopped server could not end this tunnel and would go on answering in it.
        self.server.track(self.request, False)
        self.connection = self.request = tls
        self.server.track(tls, True)
        self.rfile = tls.makefile("rb", self.rbufsize)
        self.wfile = _SocketWriter(tls)
        self.scheme = "https"

    def finish(self) -> None:
        self.server.track(self.request, False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def _dispatch(self) -> None:
        self.server.requests_by_scheme[self.scheme] += 1
        exchange = Exchange(self)
        try:
            _route(exchange, self.server.registry, self.server.faults, self.server.api_keys)
        except _CLIENT_GONE:
            self.close_connection = True
        except BadRequest as exc:
            if not exchange.response_started:
                exchange.send_api_error(400, str(exc))
            self.close_connection = True
        except Exception:
            log.exception("local sandbox server: unhandled error for %s %s", exchange.method, exchange.path)
            if not exchange.response_started:
                try:
                    exchange.drain()
                except Exception:
                    self.close_connection = True
                exchange.send_api_error(500, "internal error in the local sandbox server")
            else:
                self.close_connection = True


def _route(
    exchange: Exchange, registry: SandboxRegistry, faults: FaultInjector | None, api_keys: frozenset[str] | None
) -> None:
    path = exchange.path
    if is_rest_path(path):
        return handle_rest(exchange, registry, api_keys)

    sandbox_id = exchange.headers.get("E2b-Sandbox-Id")
    sandbox = registry.get(sandbox_id) if sandbox_id else None
    if sandbox is None:
        exchange.drain()
        # What E2B's edge proxy answers for a dead sandbox: a plain 502 whose message
        # contains "was not found" (e2b/exceptions.py SANDBOX_NOT_FOUND_MESSAGE), which
        # the SDK maps to SandboxNotRunningException / is_running() == False.
        return exchange.send_json(
            502,
            {"code": 502, "message": f"The sandbox {sandbox_id} was not found", "sandboxId": sandbox_id},
        )

    if path == "/health":
        exchange.drain()
        return exchange.send(204)
    if path == "/files":
        cut = faults.file_cut(sandbox.sandbox_id, sandbox.started_at) if faults else None
        return handle_files(exchange, sandbox, cut_at_fraction=cut, faults=faults)
    service, _, method = path.lstrip("/").partition("/")
    if exchange.method == "POST" and service == envd_filesystem.SERVICE and method in envd_filesystem.METHODS:
        return _unary(exchange, sandbox, envd_filesystem.METHODS[method])
    if exchange.method == "POST" and service == envd_process.SERVICE:
        if method in envd_process.UNARY_METHODS:
            return _unary(exchange, sandbox, envd_process.UNARY_METHODS[method])
        if method in ("Start", "Connect"):
            return _process_stream(exchange, sandbox, method, faults)
    exchange.drain()
    exchange.send_json(404, {"code": "unimplemented", "message": f"{exchange.method} {path} is not implemented"})


def _unary(exchange: Exchange, sandbox: Sandbox, method: Any) -> None:
    try:
        request = parse_json_message(exchange.body())
        response = method(sandbox, request)
    except ConnectError as exc:
        return exchange.send_json(exc.http_status, exc.to_json())
    except OSError as exc:
        error = ConnectError("internal", f"{exc.strerror or exc}")
        return exchange.send_json(error.http_status, error.to_json())
    exchange.send_json(200, response)


def _process_stream(exchange: Exchange, sandbox: Sandbox, method: str, faults: FaultInjector | None) -> None:
    from .connect_protocol import decode_envelopes

    try:
        messages = decode_envelopes(exchange.body())
        request = messages[0] if messages else {}
        timeout_ms = envd_process.parse_timeout_ms(exchange.headers.get("Connect-Timeout-Ms"))
        keepalive_s = envd_process.parse_keepalive_s(exchange.headers.get("Keepalive-Ping-Interval"))
        if method == "Start":
            process = envd_process.start(sandbox, request)
        else:
            selector = request.get("process")
            if not isinstance(selector, dict):
                raise ConnectError("invalid_argument", "process selector is required")
            process = sandbox.find_process(selector)
    except ConnectError as exc:
        # Streaming errors travel in the end-of-stream envelope with HTTP 200.
        exchange.start_chunked(200, "application/connect+json")
        exchange.write_chunk(end_of_stream(exc))
        exchange.end_chunked()
        return
    events = process.subscribe()
    if method == "Start":
        process.start_io()
    cut_at = faults.stream_cut(sandbox.sandbox_id, sandbox.started_at) if faults else None
    cut = envd_process.StreamCut(cut_at, faults, sandbox.sandbox_id, method) if faults and cut_at else None
    envd_process.stream_events(
        exchange,
        process,
        events,
        timeout_ms=timeout_ms,
        keepalive_s=keepalive_s,
        kill_on_deadline=method == "Start",
        cut=cut,
    )


class LocalSandboxServer:
    """An E2B-compatible sandbox server on 127.0.0.1, run in a background thread.

    Usage::

        with LocalSandboxServer(port=0) as server:
            sbx = Sandbox.create(**server.sdk_kwargs())

    ``port=0`` picks a free port, so several servers can run side by side.
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        base_dir: str | os.PathLike[str] | None = None,
        extra_path: list[str] | None = None,
        faults: FaultPlan | str | None = None,
        domain: str = SANDBOX_DOMAIN,
        network: NetworkMode = "auto",
        forward: list[int] | None = None,
        api_keys: list[str] | None = None,
    ) -> None:
        """``base_dir``: where sandbox roots are created (default: the system temp dir).

        ``extra_path``: directories prepended to the sandbox PATH, e.g. the directory of
        the Python interpreter jobs should use.

        ``faults``: drop command streams / file transfers on purpose (a ``FaultPlan`` or
        its spec string, see ``faults.py`` and docs/local-sandbox.md). ``None`` reads
        ``OSIRIS_SANDBOX_FAULTS``; ``""`` (or the variable unset or empty) means none.

        ``network``: ``auto`` (each sandbox in its own network namespace, without the host's
        loopback, when the kernel allows it, else the host's network), ``isolated`` (raise
        ``NetworkIsolationUnavailable`` when it cannot be had) or ``shared`` (see ``network.py``).

        ``forward``: host ports an isolated sandbox reaches at ``host_address`` (relayed to the
        host's ``127.0.0.1``), e.g. ``[3306, 5432]`` for the test databases.

        ``api_keys``: accept only these API keys on the control-plane API (401 otherwise, as E2B);
        ``None`` (the default) accepts any key. ``api_key`` / ``env()`` then give the first one.
        """
        self._api_keys = frozenset(api_keys) if api_keys is not None else None
        self._api_key = api_keys[0] if api_keys else LOCAL_API_KEY
        self._domain = domain
        self._ca = LocalCertificateAuthority()
        self.isolated = resolve_mode(network)
        self._forward = list(forward or [])
        self._bridge: HostBridge | None = None
        self._host = check_loopback_host(host)
        self._requested_port = port
        self._base_dir = Path(base_dir) if base_dir is not None else None
        if self._base_dir is not None:  # else the first create answers 500 (mkdtemp in a missing folder)
            self._base_dir.mkdir(parents=True, exist_ok=True)
        self._extra_path = list(extra_path or [])
        plan = FaultPlan.from_env() if faults is None else _fault_plan(faults)
        self._faults = FaultInjector(plan) if plan is not None else None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.registry: SandboxRegistry | None = None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> LocalSandboxServer:
        if self._httpd is not None:
            return self
        self._bridge = HostBridge(self._forward) if self.isolated else None
        self.registry = SandboxRegistry(base_dir=self._base_dir, extra_path=self._extra_path, bridge=self._bridge)
        try:
            self._httpd = _HTTPServer(
                (self._host, self._requested_port),
                self.registry,
                self._faults,
                self._ca.server_context(self._domain),
                self._domain,
                self._api_keys,
            )
        except BaseException:
            self._close_sandboxes()
            raise
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="local-e2b-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (the CLI); Ctrl-C stops it."""
        self.start()
        assert self._thread is not None
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop accepting, kill every sandbox (and its processes), remove the roots."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        self._httpd = None
        self._close_sandboxes()

    def _close_sandboxes(self) -> None:
        if self.registry is not None:
            self.registry.close()
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None

    def __enter__(self) -> LocalSandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- fault injection -------------------------------------------------------
    @property
    def faults(self) -> FaultInjector | None:
        """The active fault injector (its ``drops`` list records every executed drop)."""
        return self._faults

    def set_faults(self, plan: FaultPlan | str | None) -> FaultInjector | None:
        """Switch fault injection on (a plan or spec) or off (``None``) while serving."""
        plan = _fault_plan(plan) if plan is not None else None
        self._faults = FaultInjector(plan) if plan is not None else None
        if self._httpd is not None:
            self._httpd.faults = self._faults
        return self._faults

    # -- how to reach it -------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the proxy the SDK tunnels through (``OSIRIS_SANDBOX_SERVER``)."""
        return f"http://{self._host}:{self.port}"

    @property
    def domain(self) -> str:
        """The names the server answers as over TLS: ``api.<domain>`` and ``<port>-<id>.<domain>``."""
        return self._domain

    @property
    def trust_file(self) -> Path:
        """The roots plus the local CA: ``SSL_CERT_FILE`` for a client process (``sandbox_trust``)."""
        return self._ca.trust_path

    @property
    def requests_by_scheme(self) -> collections.Counter[str]:
        """Requests answered so far, by ``http`` (plain) and ``https`` (inside a TLS tunnel)."""
        if self._httpd is None:
            raise RuntimeError("server is not running")
        return self._httpd.requests_by_scheme

    @property
    def host_address(self) -> str:
        """The address a sandbox's commands reach the host at (the ``forward`` ports).

        The bridge address when sandboxes are isolated, else ``127.0.0.1`` (shared network).
        Point a run's connection hosts here (``MYSQL_HOST`` and the like), never at 127.0.0.1.
        """
        if not self.isolated:
            return "127.0.0.1"
        if self._bridge is None:
            raise RuntimeError("server is not running")
        return self._bridge.address

    def forward(self, port: int) -> str:
        """Make the host's ``127.0.0.1:port`` reachable from sandboxes; returns the address to use.

        For a service started after the server (a test's HTTP stub). With the shared network the
        port is reachable as it is and the address is ``127.0.0.1``.
        """
        if self._bridge is not None:
            self._bridge.forward(port)
        return self.host_address

    @property
    def api_key(self) -> str:
        return self._api_key

    def sdk_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``Sandbox.create/connect/list`` (sync and async).

        Only the supported settings: ``domain`` and ``proxy`` (the URL settings are deprecated in
        e2b 2.63). Makes this process trust the local CA (``SSL_CERT_FILE``, see
        ``osiris_dagster.sandbox_trust``) - do it before the process's first SDK call.
        """
        trust_local_ca()
        return {"api_key": self.api_key, "domain": self.domain, "proxy": self.url}

    def env(self) -> dict[str, str]:
        """What a subprocess needs: the launcher's ``OSIRIS_SANDBOX_SERVER``, and the SDK's own settings."""
        return {
            "OSIRIS_SANDBOX_SERVER": self.url,
            "E2B_API_KEY": self.api_key,
            "E2B_DOMAIN": self.domain,
            "SSL_CERT_FILE": str(self.trust_file),
        }


def _fault_plan(value: FaultPlan | str) -> FaultPlan | None:
    if isinstance(value, FaultPlan):
        return value
    return FaultPlan.parse(value) if value.strip() else None
