"""Small helpers for processes that listen on loopback ports."""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: The lowest port picked; below the kernel's ephemeral range (32768 by default on Linux).
LOWEST = 20000
# Not the `random` module's shared generator: Hypothesis seeds that one the same way in every
# process, and two test processes would then pick the same ports in the same order.
_pick = random.SystemRandom()


def ephemeral_low() -> int | None:
    """The first port of the kernel's ephemeral range, where the system says (Linux)."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now, for the caller to bind soon after.

    Picked below the kernel's ephemeral range where there is room: a port from bind(0) is
    one the kernel also gives every outgoing connection, so between this check and the
    caller's bind any process's connection to any peer (several suites and their Postgres
    clients on one machine) may take it, and the bind fails with "address already in use".
    A port below the range is only ever taken by an explicit bind.
    """
    low = ephemeral_low()
    if low is not None and low - LOWEST >= 1000:
        for _ in range(100):
            port = _pick.randrange(LOWEST, low)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float, alive=lambda: True) -> None:
    """Block until something accepts TCP connections on host:port.

    `alive` lets the caller abort early when the process that should listen died.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"process meant to listen on {host}:{port} exited")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s")
