"""Listening sockets: opened before anything slow starts, and checked for the cluster.

``nursery serve`` opens its listening socket first (``listen``): with the embedded default,
initialising and starting the private PostgreSQL takes seconds, and a taken port must fail at
once, naming itself, not after all that. The edge then serves on that socket. ``nursery
cluster up`` checks every port it is about to hand out the same way (``listen_problem``).
"""

from __future__ import annotations

import errno
import socket

from nursery.errors import CannotListen

BACKLOG = 4096  # connections waiting to be accepted (a reconnect storm arrives at once)


def listen(host: str, port: int) -> socket.socket:
    """A non-blocking socket listening on ``host:port`` (0: any free port); raises
    ``CannotListen`` naming the port when it cannot."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        # SO_REUSEADDR: a port whose old connections linger in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CannotListen(
                f"port {port} on {host} is already in use (choose another with --port or "
                "NURSERY_PORT)"
            ) from exc
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def listen_problem(host: str, port: int) -> str | None:
    """Why nothing could listen on ``host:port`` now, or None (port 0, any port, is fine)."""
    if port == 0:
        return None
    try:
        listen(host, port).close()
    except CannotListen as exc:
        return exc.message
    return None
