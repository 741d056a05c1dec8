"""The rules of docs/gateway.md: pure monitors on message time, one module per rule or rule family
(breathing, prone, fever, sensor_lost, battery, air) plus the shared debouncing in ``levels``.
Each reports ``events`` (Firing / Cleared) keyed by device; the engine maps devices to subjects
and hands the events to the AlertBook, which owns the alert lifecycle."""
