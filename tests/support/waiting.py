"""The tests' one way to wait for a condition: poll it until it holds or a deadline passes.

``wait_for`` blocks (for code outside an event loop: processes, threads); ``wait_until`` awaits, and its
condition may itself be a coroutine function (an HTTP probe). Both raise TimeoutError naming ``what``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


def wait_for(cond: Callable[[], bool], what: str, timeout_s: float, every_s: float = 0.05) -> None:
    """Poll ``cond`` every ``every_s`` until it holds."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


async def wait_until(
    cond: Callable[[], bool | Awaitable[bool]], what: str = "condition", timeout_s: float = 5.0, every_s: float = 0.01
) -> None:
    """Poll ``cond`` (awaited if it returns an awaitable) every ``every_s`` until it holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = cond()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(every_s)
