"""What every server-rendered page needs: language, catalogue, kit and the navigation bar.

Each page module builds its own context on top of :func:`page_context`, so the header, the language
switch and the navigation are the same on every page."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from dashboard.i18n import Lang, catalogue
from nurserywatch.kit import Kit

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


@dataclass(frozen=True, slots=True)
class NavItem:
    key: str  # catalogue key of the label, also the page's id
    href: str


#: The pages in the navigation bar, in order. Pages add themselves here when they exist.
NAV: list[NavItem] = [NavItem("nav.room", "/")]


def page_context(request: Request, kit: Kit, lang: Lang, current: str, **extra: Any) -> dict[str, Any]:
    t = catalogue(lang)
    nav = [
        {"href": f"{item.href}?lang={lang}", "label": t[item.key], "current": item.key == current} for item in NAV
    ]
    return {"lang": lang, "other_lang": "en" if lang == "ja" else "ja", "t": t, "kit": kit, "nav": nav} | extra


def render(request: Request, template: str, context: dict[str, Any]) -> HTMLResponse:
    return templates.TemplateResponse(request, template, context)
