"""The gateway: validates and stores readings, judges them with the rules, owns alert state.

``engine`` holds the transport-free site engine (``engine.site``: messages in, messages to publish
out, time from an injected clock) with its pure core (``rules_engine``, ``alerts``, ``sessions``) and
the observer hook (``observers``); ``rules`` one module per rule or rule family; ``config`` the rules
file model; ``db``, ``records``, ``retention``, ``child_data`` and ``influx`` storage; ``service`` the
MQTT shell around the engine (the only place that knows the transport); ``read`` what the dashboard
reads. See docs/gateway.md.
"""
