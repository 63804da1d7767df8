"""Who a connection is from, and how many connections each address holds open.

``client_address`` is the one rule for a request's address: behind our proxy (when its
headers are trusted), the address the proxy saw; else the socket's peer. The login limits key
on it (``api``), and so does the cap on open connections per address (``AddressCounts``).

Where the cap applies: at accept, on the socket's peer, when clients connect directly; behind
a trusted proxy every connection comes from the proxy, which pools plain requests of many
clients on few connections, so the cap moves to what stays open per client there: websockets,
counted by the address the proxy saw (``X-Forwarded-For``) from the handshake to the close.
"""

from __future__ import annotations

import ipaddress

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def client_address(forwarded_for: str | None, peer: str | None, trust_proxy_headers: bool) -> str:
    """The caller's address; behind our proxy, the one it saw (the last X-Forwarded-For hop,
    which the proxy appended: earlier hops are whatever the client claimed)."""
    if trust_proxy_headers and forwarded_for:
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return peer or "unknown"


class AddressCounts:
    """Open connections per address, at most ``cap`` each (None: no cap); addresses in
    ``uncapped`` (the proxy, load generators on the same host) are never counted."""

    def __init__(self, cap: int | None, uncapped: tuple[IPNetwork, ...]) -> None:
        self.cap = cap
        self._uncapped = uncapped
        self._open: dict[str, int] = {}  # only capped addresses with something open

    def admit(self, address: str) -> bool:
        """Count one more connection of ``address``; False (and nothing counted) if it is at
        its cap. Every True is followed by one ``release``."""
        if self.cap is None or self._is_uncapped(address):
            return True
        count = self._open.get(address, 0)
        if count >= self.cap:
            return False
        self._open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self._open.get(address)
        if count is None:
            return  # uncapped
        if count > 1:
            self._open[address] = count - 1
        else:
            del self._open[address]

    def _is_uncapped(self, address: str) -> bool:
        try:
            parsed = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            return False
        return any(parsed in network for network in self._uncapped)
