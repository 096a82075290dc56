"""Where the local sandbox server's CA lives, and how a client process comes to trust it.

Shared by the server (``sandbox_server/tls.py`` creates the CA there) and the launcher
(``remote/settings.py``, backend ``local``), which must not import the server: one fact, one place.

The e2b SDK's transport (pyqwest, rustls) takes no CA from the SDK's options; it loads the roots
named by ``SSL_CERT_FILE`` when it is built. So trusting the CA means pointing ``SSL_CERT_FILE`` at
``trust.pem`` - the roots the process used before plus the local CA, so other HTTPS in the
process still verifies - before the process's first SDK call. It is process-wide, which is why
only the local backend does it.
"""

from __future__ import annotations

import os
from pathlib import Path

SANDBOX_DOMAIN = "sandbox.osiris.internal"
TRUST_FILE = "trust.pem"


def ca_dir() -> Path:
    """``~/.cache/osiris-dagster/sandbox-ca`` (``$XDG_CACHE_HOME`` when set)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "osiris-dagster" / "sandbox-ca"


def trust_local_ca() -> Path:
    """Make this process's SDK transports trust the local CA; returns ``trust.pem``.

    Raises ``FileNotFoundError`` when no local server has created the CA yet.
    """
    trust = ca_dir() / TRUST_FILE
    if not trust.is_file():
        raise FileNotFoundError(trust)
    os.environ["SSL_CERT_FILE"] = str(trust)
    return trust
