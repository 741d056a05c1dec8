"""Login, logout, who-am-I, and the admin's user page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

router = APIRouter()


def forbidden_page(request: Request, message: str) -> HTMLResponse:
    return HTMLResponse(f"<p>{message}</p>", status_code=403)
