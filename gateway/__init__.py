"""The gateway: validates and stores readings, judges them with the rules, owns alert state.

Pure parts (no I/O): ``engine`` (the rules engine), ``alerts`` (alert lifecycle, re-notification,
escalation), ``sessions`` (nap sessions), ``rules`` (one module per rule or rule family), ``config``
(rules file model), ``hooks`` (observers), ``records`` (nap-check records, docs/records.md).
Thin shells: ``store`` (SQLite) and ``service`` (MQTT). See docs/gateway.md.
"""
