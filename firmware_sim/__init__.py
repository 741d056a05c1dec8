"""Simulated sensor hardware: writes the exact bytes real devices emit (docs/devices.md, docs/ble.md) to real
pseudo-terminals, driven by a YAML scenario.

Independent by design: imports none of ``edge``, ``gateway`` or ``dashboard`` and encodes the
published sentence formats itself, so a misunderstanding shared with the edge's decoder cannot
pass the tests unnoticed.
"""
