"""Security headers on every response (docs/dashboard.md, *Security*): the pages show children's names
and nap records, so they must not be framed by another site, sniffed into another type, cached on a
shared tablet, or leak their address to another site.

A plain ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``, which buffers streaming
responses and so would hold up the live stream."""

from __future__ import annotations

from typing import Final

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Only our own scripts, styles and images (every asset is vendored under /static); ``data:`` for the
#: inline SVG icons; no frames anywhere (``frame-ancestors 'none'``: no clickjacking of the 確認 button);
#: forms post only here. The JSON boot blocks (``<script type="application/json">``) are data, not
#: scripts, and need no exception.
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS: Final = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",  # frame-ancestors for browsers that predate it
    "referrer-policy": "no-referrer",
}
#: Static assets hold no child data and may be cached; everything else (pages, API, live stream) is
#: kept out of every cache, including the tablet's back-forward cache and disk.
CACHEABLE_PREFIX: Final = "/static/"


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = str(scope.get("path", "")).startswith(CACHEABLE_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                if not cacheable:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
