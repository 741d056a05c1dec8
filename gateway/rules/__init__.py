"""Rules: pure state machines on message time. Each takes typed samples and returns ``events``
(Firing / Cleared) keyed by device; the service maps devices to subjects and hands the events to
the AlertBook, which owns the alert lifecycle. More rules of DESIGN.md §6 arrive with the
rules-engine issue."""
