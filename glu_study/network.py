"""Is a server reachable? Asked once, with a short timeout, before a command depends on it: compute nodes often
have no route out, and libraries that retry for minutes would otherwise stall a whole sweep."""

from __future__ import annotations

import socket
from urllib.parse import urlparse


def host_port(url: str) -> tuple[str, int]:
    u = urlparse(url)
    return u.hostname or url, u.port or (80 if u.scheme == "http" else 443)


def reachable(url: str, timeout_s: float) -> bool:
    """Can a TCP connection to `url`'s host be opened within `timeout_s`? (A failed DNS lookup counts as no.)"""
    try:
        socket.create_connection(host_port(url), timeout=timeout_s).close()
        return True
    except OSError:
        return False
