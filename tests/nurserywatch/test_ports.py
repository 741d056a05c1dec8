"""Free loopback ports (nurserywatch/ports.py): never one a browser refuses to load, never one handed out
just before."""

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


def test_ports_picked_one_after_the_other_are_distinct() -> None:
    # A nats-server node's five listeners are picked by five calls before any is bound: one run drew
    # the same port for MQTT and monitor. 2 000 picks from ~22 800 would repeat ~90 times by chance.
    picked = [ports.free_port() for _ in range(2000)]
    assert len(set(picked)) == len(picked)
