"""What the routers take from the app: the error they raise (``ApiError``, answered as JSON by the
app) and FastAPI dependencies on the state ``create_app`` (dashboard/app.py) sets. A module of its
own so the routers do not import the app that includes them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

from fastapi import Depends, FastAPI, Request

from dashboard.i18n import Lang
from dashboard.live.link import LiveLink


class ApiError(Exception):
    """An error answered as ``{"error": code, "message": ...}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


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
