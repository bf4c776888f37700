"""Log-in, log-out and user administration pages."""

# No `from __future__ import annotations`: FastAPI reads the route annotations at runtime.

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from collector import audit, users
from collector.web.common import (LOGIN_CSRF_COOKIE, SESSION_COOKIE, Refused, check_csrf, form, login_csrf, need,
                                  render, safe_next, set_session_cookie, state_of)

router = APIRouter(include_in_schema=False)


@router.get("/login")
def login_page(request: Request, next: str = "/alerts") -> Response:
    token = login_csrf()
    resp = render(request, "login.html", next=safe_next(next), login_csrf=token, error=None)
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login",
                    secure=state_of(request).secure_cookies)
    return resp


@router.post("/login")
async def login(request: Request) -> Response:
    web = state_of(request)
    fields = await form(request)
    if not users.csrf_ok(request.cookies.get(LOGIN_CSRF_COOKIE), fields.get("csrf")):
        raise Refused(403, "the log-in form's CSRF token is missing or wrong; reload the page and try again")
    name, password = fields.get("username", "")[:128], fields.get("password", "")[:1024]
    cfg = web.config.web
    result = await run_in_threadpool(users.authenticate, web.engine, name, password,
                                     max_failures=cfg.lockout_failures, lock_minutes=cfg.lockout_minutes)
    if result.user is None:
        await run_in_threadpool(audit.record, web.engine, name or "-", "login_refused", "session", name or "-",
                                detail={"outcome": result.outcome})
        message = ("Too many failed log-ins: this account is locked for a while. Ask an administrator to unlock it."
                   if result.outcome == "locked" else "Wrong user name or password.")
        token = login_csrf()
        resp = render(request, "login.html", status=401, next=safe_next(fields.get("next")), login_csrf=token,
                      error=message)
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login",
                        secure=web.secure_cookies)
        return resp
    token, _ = await run_in_threadpool(users.new_session, web.engine, result.user, hours=cfg.session_hours)
    await run_in_threadpool(audit.record, web.engine, result.user.name, "login", "session", result.user.name,
                            role=result.user.role)
    landing = safe_next(fields.get("next"))
    if result.user.role == "manager" and landing == "/alerts":
        landing = "/summaries"
    resp = RedirectResponse(landing, status_code=303)
    set_session_cookie(resp, web, token, cfg.session_hours)
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = need(request)
    check_csrf(session, await form(request))
    users.end_session(state_of(request).engine, request.cookies.get(SESSION_COOKIE))
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@router.get("/users")
def users_page(request: Request) -> Response:
    need(request, "admin")
    return render(request, "users.html", people=users.list_users(state_of(request).engine), error=None)


@router.post("/users")
async def users_add(request: Request) -> Response:
    session = need(request, "admin")
    fields = await form(request)
    check_csrf(session, fields)
    web = state_of(request)
    action = fields.get("action", "add")
    name = fields.get("name", "").strip()
    try:
        if action == "unlock":
            users.unlock_user(web.engine, name)
        elif action == "disable":
            users.disable_user(web.engine, name)
        else:
            await run_in_threadpool(users.create_user, web.engine, name, fields.get("role", ""),
                                    fields.get("password", ""), team=fields.get("team", "").strip() or None,
                                    email=fields.get("email", "").strip() or None)
    except users.UserError as e:
        return render(request, "users.html", status=400, people=users.list_users(web.engine), error=str(e))
    audit.record(web.engine, session.user.name, f"user_{action}", "user", name, role=session.user.role)
    return RedirectResponse("/users", status_code=303)
