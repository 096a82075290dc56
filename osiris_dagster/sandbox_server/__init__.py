"""An E2B-compatible sandbox server on 127.0.0.1 for development and CI.

The real ``e2b`` SDK (pinned in pyproject.toml) is pointed at it instead of E2B's
cloud; see docs/local-sandbox.md. It is NOT a security boundary: commands run as the
server's user on the host.
"""

from .faults import FaultPlan
from .server import LOCAL_API_KEY, LocalSandboxServer, check_loopback_host

__all__ = ["LOCAL_API_KEY", "FaultPlan", "LocalSandboxServer", "check_loopback_host"]
