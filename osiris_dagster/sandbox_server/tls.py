"""TLS for the local server, so the e2b SDK reaches it the way it reaches E2B: by ``domain`` only.

e2b 2.63 deprecates its URL settings; without them the SDK always speaks HTTPS to
``api.<domain>`` and to envd at ``<port>-<sandbox id>.<domain>``. The server therefore answers as
those names: the SDK is given ``domain=sandbox.osiris.internal`` and ``proxy=<server URL>``, opens
a ``CONNECT`` tunnel to the server for every host, and the server terminates TLS inside it with a
certificate for ``api.<domain>`` and ``*.<domain>``.

The certificate is issued by a per-user CA kept in ``~/.cache/osiris-dagster/sandbox-ca/`` (or
``$XDG_CACHE_HOME``; private key mode 0600, never leaves the directory), created on first use,
so every server of the user - and every client process - agrees on it. A client trusts it
through ``trust.pem``: the process's usual roots plus this CA. The SDK's transport (pyqwest)
takes no CA argument from the SDK; it reads the roots named by ``SSL_CERT_FILE``, so the local
backend points ``SSL_CERT_FILE`` at ``trust.pem`` (roots kept, so other HTTPS in the process still
verifies). The server certificate is issued afresh at each server start (an EC key: ~1 ms).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from osiris_dagster.sandbox_trust import SANDBOX_DOMAIN, TRUST_FILE, ca_dir

__all__ = ["SANDBOX_DOMAIN", "LocalCertificateAuthority", "ca_dir"]

CA_NAME = "osiris-dagster local sandbox CA"
_CA_DAYS = 3650
_SERVER_DAYS = 30


class LocalCertificateAuthority:
    """The per-user CA: created once (under a file lock: servers may start at once), then reused."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or ca_dir()
        self.cert_path = self.directory / "ca.pem"
        self.key_path = self.directory / "ca-key.pem"
        self.trust_path = self.directory / TRUST_FILE
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (self.cert_path.exists() and self.key_path.exists()):
                self._create()
            self._write_trust()
        self._cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self._key = key

    def server_context(self, domain: str = SANDBOX_DOMAIN) -> ssl.SSLContext:
        """A server-side context with a fresh certificate for ``api.<domain>`` and ``*.<domain>``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"api.{domain}")]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=_SERVER_DAYS))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(f"api.{domain}"), x509.DNSName(f"*.{domain}")]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # The server speaks HTTP/1.1 only: ALPN keeps the SDK (which prefers h2) on it.
        context.set_alpn_protocols(["http/1.1"])
        # ssl loads a chain from files only; a private temp file, removed at once.
        chain = self.directory / f"server-{os.getpid()}-{id(context)}.pem"
        fd = os.open(chain, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(
                    key.private_bytes(
                        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                    )
                )
                handle.write(cert.public_bytes(serialization.Encoding.PEM))
            context.load_cert_chain(chain)
        finally:
            with contextlib.suppress(FileNotFoundError):
                chain.unlink()
        return context

    def _create(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        pem_key = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(self.key_path, pem_key)
        _write_atomic(self.cert_path, cert.public_bytes(serialization.Encoding.PEM))

    def _write_trust(self) -> None:
        """``trust.pem``: the roots this process would use anyway, then the local CA."""
        current = os.environ.get("SSL_CERT_FILE")
        if current and Path(current) == self.trust_path and self.trust_path.is_file():
            return  # this process already trusts it: its roots are in there (the CA never changes)
        roots = b""
        for candidate in (os.environ.get("SSL_CERT_FILE"), ssl.get_default_verify_paths().cafile):
            if candidate and Path(candidate).is_file() and Path(candidate) != self.trust_path:
                roots = Path(candidate).read_bytes()
                break
        _write_atomic(self.trust_path, roots.rstrip(b"\n") + b"\n" + self.cert_path.read_bytes())


def _write_private(path: Path, data: bytes) -> None:
    temp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temp, path)


def _write_atomic(path: Path, data: bytes) -> None:
    temp = path.with_suffix(f".{os.getpid()}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)
