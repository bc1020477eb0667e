"""free_port picks ports that only an explicit bind takes (mailwatch_devstack/ports.py)."""

from __future__ import annotations

import socket

from mailwatch_devstack import ports


def test_free_ports_are_below_the_kernels_ephemeral_range():
    # An outgoing connection's local port comes from that range: one of those could take a
    # port picked there before the caller binds it.
    low = ports.ephemeral_low()
    assert low is not None and low - ports.LOWEST >= 1000, low  # Linux, as CI
    picked = {ports.free_port() for _ in range(50)}
    assert all(ports.LOWEST <= port < low for port in picked), sorted(picked)
    assert len(picked) > 1  # picked, not one fixed port


def test_a_free_port_can_be_bound_and_one_in_use_is_not_picked(monkeypatch):
    held = socket.socket()
    held.bind(("127.0.0.1", ports.free_port()))
    held.listen()
    try:
        taken = held.getsockname()[1]
        # The picker's generator offers the held port first, then another.
        offers = iter([taken, taken + 1 if taken + 1 < 32768 else taken - 1])
        monkeypatch.setattr(ports._pick, "randrange", lambda low, high: next(offers))
        port = ports.free_port()
        assert port != taken
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
    finally:
        held.close()
