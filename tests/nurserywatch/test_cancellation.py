"""A cancellation Python 3.11's wait_for loses (nurserywatch/cancellation.py), and what a stop that
hangs logs (nurserywatch/cli/runtime.py). The loops that must honour it are tested where they live
(tests/gateway/test_ha_lease.py, test_jetstream_shell.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

import pytest

from nurserywatch.cancellation import raise_if_cancel_was_swallowed
from tests.support.swallowed_cancel import SwallowedCancel


async def _loop(sc: SwallowedCancel, check: bool) -> None:
    while True:
        await sc.wait()
        if check:
            raise_if_cancel_was_swallowed()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="CPython fixed gh-86296 in 3.12: nothing is lost there")
async def test_wait_for_loses_a_cancellation_arriving_with_its_result_on_this_python() -> None:
    """The precondition of the fix: without the check, a loop keeps running after its cancel."""
    sc = SwallowedCancel()
    task = asyncio.create_task(_loop(sc, check=False))
    await sc.complete_and_cancel(task)
    await asyncio.sleep(0.2)
    assert not task.done() and sc.calls_after > 0, "the cancellation was lost: the loop went on"
    task.cancel()  # a second request lands in a plain sleep
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_loop_that_checks_stops_at_its_next_step() -> None:
    sc = SwallowedCancel()
    task = asyncio.create_task(_loop(sc, check=True))
    await sc.complete_and_cancel(task)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert sc.calls_after == 0


def test_a_stop_that_hangs_logs_where_every_task_waits() -> None:
    """A part that does not stop within STOP_REPORT_AFTER_S of SIGTERM names the task and the line it
    waits on, instead of hanging silently until systemd kills it."""
    program = textwrap.dedent("""
        import asyncio, signal, os
        from nurserywatch.cli import runtime
        runtime.STOP_REPORT_AFTER_S = 0.3
        runtime.setup_logging("INFO")

        async def stubborn():
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                await asyncio.sleep(1.0)  # a shutdown step that takes too long

        async def main():
            task = asyncio.create_task(stubborn(), name="stubborn-part")
            asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
            await task

        runtime.run_until_signalled(main())
    """)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "still stopping after 0.3 s; waiting on:" in done.stderr
    report = done.stderr.split("waiting on:", 1)[1]
    assert "task stubborn-part (cancel requests 1):" in report
    assert "in stubborn" in report and "in sleep" in report
    assert time.monotonic() - started < 20
