"""nurserywatch: open, vendor-neutral nap-check and air-quality monitoring for nurseries."""

__version__ = "0.1.0"
