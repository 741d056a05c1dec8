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

log = logging.getLogger("nurserywatch.stop")

#: A clean stop takes well under a second; past this, every task still running is logged with where
#: it waits, so a stop that hangs says why (systemd's TimeoutStopSec kills it later).
STOP_REPORT_AFTER_S = 5.0


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
            loop.call_later(STOP_REPORT_AFTER_S, report_pending)

        def report_pending() -> None:
            if not task.done():
                log.warning("still stopping after %.1f s; waiting on:\n%s", STOP_REPORT_AFTER_S, pending_stacks())

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(runner())


def pending_stacks() -> str:
    """Every unfinished task of the running loop and the chain of awaits it is suspended in
    (``Task.get_stack`` gives only the outermost frame of a suspended coroutine)."""
    out: list[str] = []
    for task in asyncio.all_tasks():
        if task.done():
            continue
        lines = [f"task {task.get_name()} (cancel requests {task.cancelling()}):"]
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is None:  # a future or a finished coroutine: the end of the chain
                lines.append(f"    awaiting {awaited!r:.200}")
                break
            lines.append(f"    {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        out.append("\n".join(lines))
    return "\n".join(out)
