"""A MariaDB server of the test's own that speaks TLS (the session's shared server has TLS off).

`mariadb-install-db` into a temporary folder, then `mariadbd` on a free loopback port with a
certificate the test's own CA signed for 127.0.0.1, and two users: one that the server refuses
without TLS (`REQUIRE SSL`) and one that it accepts either way. Stopped (and the folder removed)
when the test ends. Needs MariaDB's server binaries, as the session's server does; no skip: a
missing binary fails the test naming it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

INSTALL_DB = "/usr/bin/mariadb-install-db"
MARIADBD = "/usr/sbin/mariadbd"
MYSQL = shutil.which("mysql") or "/usr/bin/mysql"
DATABASE = "tls_source"


@dataclass(frozen=True)
class TlsServer:
    port: int
    socket_path: Path
    ca: Path  # the CA that signed the server's certificate
    other_ca: Path  # a CA that did not

    def url(self, user: str, **options: str) -> str:
        query = "&".join(f"{key}={value}" for key, value in options.items())
        return f"mysql+pymysql://{user}@127.0.0.1:{self.port}/{DATABASE}" + (f"?{query}" if query else "")

    def admin(self, sql: str) -> str:
        """Run ``sql`` as root over the server's unix socket; its output as the client prints it."""
        command = [MYSQL, "--no-defaults", "-S", str(self.socket_path), "-u", "root", "--batch", "-e", sql]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd)


def _certificates(folder: Path) -> None:
    """ca.pem signs server.pem (for 127.0.0.1); other-ca.pem signs nothing the server shows."""
    for name in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=osiris test {name}",
            "-keyout", f"{name}-key.pem", "-out", f"{name}.pem", cwd=folder,
        )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server-key.pem", "-out", "server.csr", cwd=folder,
    )  # fmt: skip
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
        "-days", "2", "-extfile", "san.cnf", "-out", "server.pem", cwd=folder,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def tls_mariadb(folder: Path, *, tls: bool = True) -> Iterator[TlsServer]:
    """The server; ``tls=False`` starts the same server with TLS off (``have_ssl`` DISABLED)."""
    for binary in (INSTALL_DB, MARIADBD):
        if not Path(binary).exists():
            raise AssertionError(f"{binary} is missing: install MariaDB's server package (apt install mariadb-server)")
    folder.mkdir(parents=True)
    _certificates(folder)
    data = folder / "data"
    subprocess.run(
        [INSTALL_DB, "--no-defaults", f"--datadir={data}", "--user=root", "--auth-root-authentication-method=socket",
         "--skip-test-db"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = TlsServer(_free_port(), folder / "mysqld.sock", folder / "ca.pem", folder / "other-ca.pem")
    log = folder / "server.log"
    certificates = [
        f"--ssl-ca={folder / 'ca.pem'}",
        f"--ssl-cert={folder / 'server.pem'}",
        f"--ssl-key={folder / 'server-key.pem'}",
    ]
    process = subprocess.Popen(
        [MARIADBD, "--no-defaults", f"--datadir={data}", "--user=root", f"--socket={server.socket_path}",
         f"--port={server.port}", "--bind-address=127.0.0.1", f"--pid-file={folder / 'mysqld.pid'}",
         *(certificates if tls else []),
         "--skip-name-resolve", "--innodb-buffer-pool-size=16M", f"--log-error={log}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if ("YES" if tls else "DISABLED") in server.admin("SHOW VARIABLES LIKE 'have_ssl'"):
                    break
            except subprocess.CalledProcessError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the test's TLS MariaDB did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        server.admin(
            f"CREATE DATABASE {DATABASE};"
            f" CREATE USER tls_only@'%' {'REQUIRE SSL' if tls else ''}; CREATE USER anyway@'%';"
            f" GRANT ALL ON {DATABASE}.* TO tls_only@'%'; GRANT ALL ON {DATABASE}.* TO anyway@'%';"
        )
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)
