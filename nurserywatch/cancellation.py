"""A cancellation that Python 3.11's ``asyncio.wait_for`` lost, honoured at the caller's next step.

``wait_for`` (aiomqtt's publish/subscribe and nats-py's requests and pull fetches use it) returns the
result instead of raising when the cancellation arrives in the same loop step as the result (CPython
gh-86296, fixed in 3.12). A loop around such a call then never stops: a SIGTERMed gateway kept serving
(and renewing its lease) until it was killed. The task still counts the request (``cancelling()``), so
every long-running loop calls ``raise_if_cancel_was_swallowed`` after such an await."""

from __future__ import annotations

import asyncio


def raise_if_cancel_was_swallowed() -> None:
    """Raise CancelledError if the current task was asked to stop and still runs."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
