"""The gateway: validates and stores readings, judges them with the rules, owns alert state.

Pure parts (no I/O): ``alerts`` (alert lifecycle), ``rules`` (one module per rule), ``config``
(rules file model). Thin shells: ``store`` (SQLite) and ``service`` (MQTT). See docs/gateway.md.
"""
