"""What the web pages and the JSON API share: the UI's state, templates, sessions, CSRF checks and scoping."""

from __future__ import annotations

import datetime as dt
import secrets
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from collector import users
from collector.config import CollectorConfig
from collector.triage import SEVERITY_ORDER, STATUS_WORDS, STATUSES
from collector.users import Session

HERE = Path(__file__).parent
SESSION_COOKIE = "custos_session"
LOGIN_CSRF_COOKIE = "custos_login_csrf"
MAX_FORM_BYTES = 64 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class LoginRequired(Exception):
    """The page needs a signed-in user; answered with a redirect to the log-in page."""


class Refused(Exception):
    """Answered with an error page: 403 (not for your role), 404 (not there, or not your team's)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class WebState:
    engine: Engine
    config: CollectorConfig
    tls: bool
    env: jinja2.Environment
    dispatcher: Any = None
    jobs: Any = None

    @property
    def secure_cookies(self) -> bool:
        s = self.config.web.secure_cookies
        return self.tls if s == "auto" else bool(s)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)


def make_env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["num"] = lambda v: f"{v:,.0f}"
    env.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M") if t else "—"
    env.filters["svg"] = lambda s: Markup(s)
    env.filters["pct"] = lambda v: f"{v:.0%}"
    env.globals.update(STATUSES=STATUSES, STATUS_WORDS=STATUS_WORDS, SEVERITIES=list(SEVERITY_ORDER))
    return env


def state_of(request: Request) -> WebState:
    return request.app.state.custos_web  # type: ignore[no-any-return]


def render(request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    web = state_of(request)
    session: Session | None = getattr(request.state, "session", None)
    html = web.env.get_template(template).render(request=request, session=session, user=session.user if session
                                                 else None, csrf=session.csrf if session else "", **ctx)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def current(request: Request) -> Session | None:
    web = state_of(request)
    s = users.session_of(web.engine, request.cookies.get(SESSION_COOKIE), web.now())
    request.state.session = s
    return s


def need(request: Request, *roles: str) -> Session:
    """The signed-in session, with one of `roles` if given (403 otherwise)."""
    s = current(request)
    if s is None:
        raise LoginRequired()
    if roles and s.user.role not in roles:
        raise Refused(403, f"this page is for {' or '.join(roles)} users")
    return s


async def form(request: Request) -> dict[str, str]:
    """A url-encoded form body (the UI posts nothing else), bounded in size."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Refused(413, "the form is too large")
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise Refused(415, "send the form as application/x-www-form-urlencoded")
    parsed = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def check_csrf(session: Session, fields: Mapping[str, str]) -> None:
    if not users.csrf_ok(session.csrf, fields.get("csrf")):
        raise Refused(403, "the form's CSRF token is missing or wrong; reload the page and send it again")


def set_session_cookie(response: Response, web: WebState, token: str, hours: float) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=int(hours * 3600), httponly=True, samesite="strict",
                        secure=web.secure_cookies, path="/")


def login_csrf() -> str:
    return secrets.token_urlsafe(24)


def safe_next(target: str | None) -> str:
    """Only a path on this site: never an address elsewhere (open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/alerts"
    return target
