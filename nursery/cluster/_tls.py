"""``nursery cluster up --tls``: Caddy serves the cluster over HTTPS with certificates from its
own local CA (``local_certs``: no ACME, nothing leaves the machine), so that the installable web
app can be tried from a phone on the same network once the phone trusts that CA's root.

Caddy keeps the CA under its data directory, which the supervisor points into the cluster
directory: the root certificate is ``DIR/caddy/data/caddy/pki/authorities/local/root.crt``
(made on Caddy's first start, kept across restarts: trust it once). Caddy is told not to
install it into this machine's trust store (``skip_install_trust``) and to open no port 80 for
redirects (``auto_https disable_redirects``): only the proxy port is served.

The certificate names are the addresses the proxy is reached at: ``127.0.0.1`` when it binds
a loopback or every address, and this machine's own IPv4 addresses when it binds every address
(``--proxy-host 0.0.0.0``: what a phone on the network connects to), or the address it binds.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import ssl
import struct
from pathlib import Path

ROOT_CERTIFICATE = Path("caddy/data/caddy/pki/authorities/local/root.crt")
_SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address


def root_certificate(directory: Path) -> Path:
    return directory / ROOT_CERTIFICATE


def client_context(directory: Path) -> ssl.SSLContext | None:
    """An SSL context that trusts the cluster's CA only; None until Caddy has made it."""
    root = root_certificate(directory)
    if not root.is_file():
        return None
    return ssl.create_default_context(cafile=str(root))


def certificate_names(host: str) -> list[str]:
    """The addresses to put in the certificate for a proxy bound to ``host``."""
    address = ipaddress.ip_address(host) if _is_ip(host) else None
    if address is None:
        return [host]
    if address.is_unspecified:
        return ["127.0.0.1", *(a for a in own_ipv4_addresses() if a != "127.0.0.1")]
    return [host]


def own_ipv4_addresses() -> list[str]:
    """This machine's IPv4 addresses, from the interfaces (no packet is sent)."""
    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                answer = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
            except OSError:  # no IPv4 address on this interface
                continue
            address = socket.inet_ntoa(answer[20:24])
            if address not in found:
                found.append(address)
    return found


def caddy_env(host: str, port: int) -> dict[str, str]:
    """The Caddyfile's placeholders for HTTPS on ``port`` with the local CA."""
    return {
        "NURSERY_SITE": ", ".join(f"https://{name}:{port}" for name in certificate_names(host)),
        "NURSERY_CADDY_GLOBAL": "local_certs\nskip_install_trust\nauto_https disable_redirects",
    }


def proxy_url(host: str, port: int, tls: bool) -> str:
    """The proxy's address as this machine reaches it."""
    if not tls:
        return f"http://{host}:{port}"
    return f"https://{certificate_names(host)[0]}:{port}"


def trust_instructions(directory: Path, host: str, port: int) -> str:
    """What to tell the operator once the cluster serves HTTPS."""
    root = root_certificate(directory)
    urls = "  ".join(f"https://{name}:{port}" for name in certificate_names(host))
    lines = [
        f"HTTPS with Caddy's local CA: {urls}",
        f"Its root certificate: {root}",
        "Trust it once per device (it signs only this cluster's certificates):",
        f"  Debian/Ubuntu:  sudo cp {root} /usr/local/share/ca-certificates/nursery-local.crt"
        " && sudo update-ca-certificates",
        f"  Chromium/Chrome on Linux (its own store):  certutil -d sql:$HOME/.pki/nssdb -A -t C,,"
        f" -n nursery-local -i {root}",
        "  macOS:  sudo security add-trusted-cert -d -r trustRoot -k"
        f" /Library/Keychains/System.keychain {root}",
        f"  Windows:  certutil -addstore -f ROOT root.crt  (a copy of {root.name})",
        "  Android: copy root.crt to the phone, Settings → Security → Encryption & credentials →"
        " Install a certificate → CA certificate",
        "  iPhone/iPad: AirDrop or mail root.crt, install the profile (Settings → Profile"
        " Downloaded), then Settings → General → About → Certificate Trust Settings → turn it on",
    ]
    if _is_ip(host) and ipaddress.ip_address(host).is_loopback:
        lines.append("A phone needs the proxy on the network: nursery cluster up --tls --proxy-host 0.0.0.0")
    return "\n".join(lines)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
