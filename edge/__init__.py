"""The edge agent: reads sensors on a Raspberry Pi, decodes and classifies their data, publishes
readings over MQTT. Imports only the contract (``nurserywatch``) and its own modules."""
