"""nurserywatch: open, vendor-neutral nap-check and air-quality monitoring for nurseries."""

__version__ = "0.1.0"

#: No clock earlier than this can be right: the edge treats an earlier wall clock (a Raspberry Pi
#: without RTC before NTP sync) as not yet plausible. Bump with each release.
BUILD_DATE_MS = 1_795_910_400_000  # 2026-11-29T00:00:00Z
