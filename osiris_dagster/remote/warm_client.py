"""Hand a run to the pooled sandbox's warm worker (standard library only; run with ``python -I -S``).

Started by the supervisor in ``~/osiris`` with the command environment a cold worker gets. It
passes its stdin/stdout/stderr, its environment and its working directory to `warm_worker` over
``warm.sock``, waits for the run's exit code and exits with it, so the supervisor sees the same
stream and exit code as from a cold worker. Without a warm worker (socket missing or refused) it
becomes the cold worker (``exec python -m osiris_dagster.remote.worker``).
"""

import json
import os
import socket
import sys

SOCKET_NAME = "warm.sock"


def main() -> int:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(SOCKET_NAME)
    except OSError:
        connection.close()
        print("[osiris warm client] no warm worker: starting a cold one", file=sys.stderr, flush=True)
        os.execv(sys.executable, [sys.executable, "-m", "osiris_dagster.remote.worker"])
    payload = json.dumps({"env": dict(os.environ), "cwd": os.getcwd()}).encode()
    sent = socket.send_fds(connection, [payload], [0, 1, 2])
    connection.sendall(payload[sent:])
    connection.shutdown(socket.SHUT_WR)
    answer = b""
    while chunk := connection.recv(64):
        answer += chunk
    code = int(answer) if answer.strip().lstrip(b"-").isdigit() else 1
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
