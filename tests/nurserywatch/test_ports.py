"""Free loopback ports (nurserywatch/ports.py): never one a browser refuses to load."""

from __future__ import annotations

import itertools

import pytest

from nurserywatch import ports


def test_a_port_chromium_refuses_is_never_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    # 10080 drawn first (as it once was: ERR_UNSAFE_PORT in a dashboard browser test), then others.
    draws = itertools.chain([10080, 10080], itertools.count(20_000))
    monkeypatch.setattr(ports._pick, "randrange", lambda lo, hi: next(draws))
    picked = ports.free_ports(2)
    assert not set(picked) & ports.BROWSER_UNSAFE and len(set(picked)) == 2
    assert all(ports.PICK_RANGE[0] <= p < ports.PICK_RANGE[1] for p in picked)
