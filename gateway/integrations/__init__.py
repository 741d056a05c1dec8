"""Bridges from the site's MQTT contract to other systems (docs/integrations.md)."""
