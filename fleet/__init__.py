"""The fleet tier: many nurseries on one operator's NATS cluster (docs/fleet.md)."""
