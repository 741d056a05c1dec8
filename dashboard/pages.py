"""What every server-rendered page needs: language, catalogue, kit and the navigation bar.

Each page module builds its own context on top of :func:`page_context`, so the header, the language
switch and the navigation are the same on every page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from dashboard.auth.models import Role
from dashboard.i18n import Lang, catalogue, label

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["label"] = label  # {{ label(t, 'rule', a.rule) }}: a rule's or device kind's name


class Header(Protocol):
    """What the page header shows of the place the dashboard serves: a site's ``Kit``, or the fleet
    board's ``FleetHeader`` (dashboard/routes/fleet.py)."""

    @property
    def name(self) -> str: ...

    @property
    def timezone(self) -> str: ...


@dataclass(frozen=True, slots=True)
class NavItem:
    key: str  # catalogue key of the label, also the page's id
    href: str
    role: Role = Role.STAFF  # shown only to users with at least this role (the route checks it too)
    #: Place in the bar, smallest first: staff pages 10–29, manager pages 30–49, admin pages 50 and up.
    #: Routers add their items at import time, in whatever order the app includes them; the bar is sorted
    #: by this, so the order is the one written here (tests/dashboard/test_dashboard_labels.py checks it).
    order: int = 0


#: The pages in the navigation bar. Pages add themselves here when they exist; shown sorted by ``order``.
NAV: list[NavItem] = [NavItem("nav.room", "/", order=10)]


def nav_items() -> list[NavItem]:
    """NAV in display order (stable: items with the same order keep the order they were added in)."""
    return sorted(NAV, key=lambda item: item.order)


def page_context(request: Request, kit: Header, lang: Lang, current: str, **extra: Any) -> dict[str, Any]:
    t = catalogue(lang)
    # The signed-in user (set by the route's auth dependency): header name, logout, CSRF meta, nav by role.
    session = getattr(request.state, "nw_session", None) or None
    user = session.user if session else None
    app = request.scope.get("app")  # None: a template rendered outside a request (tests)
    own_nav = getattr(app.state, "nav", None) if app is not None else None  # the fleet board has its own bar
    nav = [
        {"href": f"{item.href}?lang={lang}", "label": t[item.key], "current": item.key == current}
        for item in own_nav or nav_items()
        if user is not None and user.may(item.role)
    ]
    base = {"lang": lang, "other_lang": "en" if lang == "ja" else "ja", "t": t, "kit": kit, "nav": nav}
    auth = {"user": user, "csrf_token": session.csrf_token if session else None}
    return base | auth | extra


def render(request: Request, template: str, context: dict[str, Any]) -> HTMLResponse:
    return templates.TemplateResponse(request, template, context)
