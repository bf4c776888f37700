"""The collector's web UI and its JSON API: `install(app, state)` adds the pages, the API, static files, and
starts the notification dispatcher and the scheduled jobs with the app's lifespan."""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from collector.web.common import HERE, LoginRequired, Refused, WebState, make_env, render

log = logging.getLogger("custos.web")


def install(app: FastAPI, state: Any) -> WebState:
    """Mount the UI on `app` (collector/app.py's `create_app`); `state` is its `App`."""
    from collector.notify import Dispatcher
    from collector.scheduler import Jobs
    from collector.web import api, pages, pages_auth, pages_fraud

    config = state.config
    web = WebState(engine=state.engine, config=config, tls=config.server.tls_cert is not None, env=make_env())
    app.state.custos_web = web
    if config.notify.enabled:
        web.dispatcher = Dispatcher(state.engine, config.notify, public_url=config.web.public_url)
    if config.weekly.enabled:
        web.jobs = Jobs(state.engine, config, on_sent=web.dispatcher.wake if web.dispatcher else None)
    app.include_router(api.router)
    if config.web.enabled:
        app.include_router(pages_auth.router)
        app.include_router(pages.router)
        app.include_router(pages_fraud.router)
        app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?next=" + urllib.parse.quote(target, safe=""), status_code=303)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> Response:
        return render(request, "error.html", status=exc.status, message=exc.message, code=exc.status)

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        async with inner(a) as value:
            if web.dispatcher is not None:
                web.dispatcher.start()
            if web.jobs is not None:
                await run_in_threadpool(web.jobs.start)
            try:
                yield value
            finally:
                if web.jobs is not None:
                    await run_in_threadpool(web.jobs.stop)
                if web.dispatcher is not None:
                    await run_in_threadpool(web.dispatcher.stop)

    app.router.lifespan_context = lifespan
    return web
