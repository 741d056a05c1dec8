"""Process plumbing for the CLI: logging and running a coroutine until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from nurserywatch.systemd import Notifier


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiomqtt/paho and uvicorn are chatty at INFO, httpx logs every request (each InfluxDB write of the
    # gateway and the fleet workers); their warnings still show.
    for noisy in ("amqtt", "transitions", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_until_signalled(main: Coroutine[Any, Any, None], notifier: Notifier | None = None) -> None:
    """Run ``main``; SIGINT or SIGTERM cancels it so every part can shut down cleanly (and tells
    systemd, through ``notifier``, that the part is stopping)."""

    async def runner() -> None:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()

        def stop() -> None:
            if notifier is not None:
                notifier.stopping()
            task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(runner())
