"""Whether this process can listen on an address, asked before anything slow starts.

``nursery serve`` checks its port first: with the embedded default, initialising and starting
the private PostgreSQL takes seconds, and a taken port must fail at once, naming itself, not
after all that. ``nursery cluster up`` checks every port it is about to use the same way.
The check binds the way the server will (SO_REUSEADDR: a port whose old connections linger in
TIME_WAIT is free) and releases at once; whoever takes the port in between still makes the
server's own bind fail, later, with the operating system's error.
"""

from __future__ import annotations

import errno
import socket

from nursery.errors import CannotListen


def listen_problem(host: str, port: int) -> str | None:
    """Why nothing could listen on ``host:port`` now, or None (port 0, any port, is fine)."""
    if port == 0:
        return None
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot listen on {host}:{port}: {exc.strerror}"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return f"port {port} on {host} is already in use"
                return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def check_can_listen(host: str, port: int) -> None:
    """Raise ``CannotListen`` (with the port in its message) when ``listen_problem`` finds one."""
    problem = listen_problem(host, port)
    if problem is not None:
        raise CannotListen(f"{problem} (choose another with --port or NURSERY_PORT)")
