"""The staff room dashboard: a FastAPI app that mirrors the site's MQTT state (alerts, postures,
device and edge status) and sends acknowledgements back as commands. Entry point:
:func:`dashboard.app.serve_dashboard`."""
