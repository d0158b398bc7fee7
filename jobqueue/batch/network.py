"""Which address the scheduler and the workers use."""
from __future__ import annotations

import socket


def interface_address(name: str) -> str:
    """The IPv4 address of a network interface (``ib0``, ``eth0``, ``lo``)."""
    import psutil

    addresses = psutil.net_if_addrs()
    if name not in addresses:
        raise ValueError(f"no network interface {name!r} on {socket.gethostname()}; "
                         f"it has: {', '.join(sorted(addresses))}")
    for a in addresses[name]:
        if a.family == socket.AF_INET:
            return a.address
    raise ValueError(f"network interface {name!r} on {socket.gethostname()} has no IPv4 address")


def public_address() -> str:
    """The address of this host that other hosts reach it by: the source address of the default
    route (no packet is sent), else what the host name resolves to, else 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("203.0.113.1", 9))   # TEST-NET-3: routed by the default route
            address = s.getsockname()[0]
            if not address.startswith("0."):
                return address
        except OSError:
            pass
    try:
        return socket.gethostbyname(socket.getfqdn())
    except OSError:
        return "127.0.0.1"
