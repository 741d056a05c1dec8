"""Running a coroutine as a task for the length of a test step, and stopping it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task``; it must end by that cancellation, not by an error of its own."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
