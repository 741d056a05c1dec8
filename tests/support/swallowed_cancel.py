"""Python 3.11's lost cancellation (CPython gh-86296), made deterministic: an await inside
``asyncio.wait_for`` whose result arrives in the same loop step as the task's cancellation returns the
result instead of raising CancelledError. Real code meets it by chance (a SIGTERM landing as a NATS or
MQTT reply does); a test arranges it with ``SwallowedCancel``."""

from __future__ import annotations

import asyncio
from typing import Any


class SwallowedCancel:
    """Stand in for one awaited call (``await sc.wait(result)``): the first call waits inside
    ``wait_for`` until ``complete_and_cancel``; later calls return ``result`` after a short pause."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self._fut: asyncio.Future[None] | None = None
        self.calls_after = 0

    async def wait(self, result: Any = None) -> Any:
        if self._fut is None:
            self._fut = asyncio.get_running_loop().create_future()
            self.entered.set()
            await asyncio.wait_for(self._fut, 30)
        else:
            self.calls_after += 1
            await asyncio.sleep(0.01)
        return result

    async def complete_and_cancel(self, task: asyncio.Task[Any]) -> None:
        await asyncio.wait_for(self.entered.wait(), 10)
        assert self._fut is not None
        self._fut.set_result(None)  # the reply …
        task.cancel()  # … and the SIGTERM, in one loop step
