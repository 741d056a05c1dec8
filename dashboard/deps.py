"""What the routers take from the app: the error they raise (``ApiError``, answered as JSON by the
app) and FastAPI dependencies on the state ``create_app`` (dashboard/app.py) sets. A module of its
own so the routers do not import the app that includes them."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Final, cast

from fastapi import Depends, FastAPI, Request

from dashboard.i18n import Lang
from dashboard.live.link import LiveLink
from gateway.read import LAST_DAY

#: The largest id SQLite (and the records' sequence numbers) can hold: ids in paths and queries are
#: bounded by it, so a larger one is a 422 rather than an OverflowError deep in a query.
INT64_MAX: Final = 2**63 - 1


class ApiError(Exception):
    """An error answered as ``{"error": code, "message": ...}`` with ``status``. ``text``: a catalogue key
    and its placeholders, for the page a browser gets instead of JSON (the message in its language)."""

    def __init__(
        self, status: int, code: str, message: str, text: tuple[str, dict[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.text = text


def get_link(request: Request) -> LiveLink:
    return get_link_of(request.app)


def get_default_lang(request: Request) -> Lang:
    return cast(Lang, request.app.state.default_lang)


def get_gateway_db(request: Request) -> Path:
    """The gateway's SQLite file; 503 when the dashboard was started without one."""
    path = cast(Path | None, request.app.state.gateway_db)
    if path is None:
        raise ApiError(503, "no_gateway_db", "this dashboard was started without the gateway's database (--db)")
    return path


LinkDep = Annotated[LiveLink, Depends(get_link)]
DefaultLangDep = Annotated[Lang, Depends(get_default_lang)]
GatewayDbDep = Annotated[Path, Depends(get_gateway_db)]


def get_link_of(app: FastAPI) -> LiveLink:
    """The app's MQTT side (for callers that hold the app, such as tests and benchmarks)."""
    return cast(LiveLink, app.state.link)


def parse_day(text: str, what: str, status: int, code: str) -> date:
    """A site-local day given as YYYY-MM-DD; otherwise ``ApiError(status, code)`` naming ``what``: not a
    date, or a day whose end the calendar cannot hold (9999-12-31: its next midnight overflows)."""
    shown = text[:40]
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ApiError(status, code, f"{what}: {shown!r} is not a date like 2026-01-31",
                       ("error.date_format", {"value": shown})) from None  # fmt: skip
    if day > LAST_DAY:
        shown, last = day.isoformat(), LAST_DAY.isoformat()
        raise ApiError(status, code, f"{what}: {shown} is out of range (the last day is {last})",
                       ("error.date_range", {"value": shown, "last": last}))  # fmt: skip
    return day
