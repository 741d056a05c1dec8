"""Is the system clock synchronised? The I/O half of clock sanity (edge/agent/clock_sanity.py is the logic).

    clock_synchronised() -> bool

True when systemd-timesyncd has written /run/systemd/timesync/synchronized, or when the kernel says
its clock is synchronised (adjtimex(2) does not return TIME_ERROR): ntpd, chrony (with ``rtcsync``,
Raspberry Pi OS's default) and timesyncd all clear the kernel's "unsynchronised" flag once they
have set the time — the same test ``timedatectl`` shows as "System clock synchronized". Cheap (a
stat and a read-only system call), so it can run every second; never raises.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

TIMESYNCD_FLAG = "/run/systemd/timesync/synchronized"
#: adjtimex(2) return value: "the system clock is not synchronized to a reliable server".
TIME_ERROR = 5
#: Larger than struct timex on every Linux ABI (it is 208 bytes on 64-bit); zeroed = read only.
_TIMEX_BYTES = 512


def clock_synchronised() -> bool:
    return os.path.exists(TIMESYNCD_FLAG) or kernel_clock_state() not in (None, TIME_ERROR)


def kernel_clock_state() -> int | None:
    """adjtimex(2) with modes = 0 (read only): TIME_OK (0) … TIME_ERROR (5); None where unavailable."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        state = int(libc.adjtimex(ctypes.create_string_buffer(_TIMEX_BYTES)))
    except (OSError, AttributeError):  # not Linux / no adjtimex
        return None
    return None if state < 0 else state
