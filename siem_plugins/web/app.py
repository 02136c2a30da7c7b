"""The settings server (``siem-plugins serve``): the API and the page, on one runtime.

FastAPI on uvicorn: FastAPI because the API's OpenAPI description comes from the same
code that serves it (and a test checks it), on Starlette, whose signed session cookie
(itsdangerous) and Jinja2 templates the page uses; uvicorn because it is Starlette's
own server, small, and handles SIGTERM cleanly.

Headers on every answer keep the page out of frames and other origins' reach
(``Content-Security-Policy`` with ``frame-ancestors 'none'``, no inline scripts: the page
has none), and nothing authenticated is cached.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from siem_plugins import __version__
from siem_plugins.runtime import Runtime
from siem_plugins.web.auth import SESSION_COOKIE, SESSION_MAX_AGE_S, Authenticator
from siem_plugins.web.model import SettingsError

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def create_app(rt: Runtime, *, session_secret: str, secure_cookies: bool = False) -> FastAPI:
    """The settings server on ``rt`` (its control store, its plugins, its state)."""
    from siem_plugins.web import api, pages

    if rt.control is None:
        raise RuntimeError("the runtime has no control store")
    app = FastAPI(
        title="siem-plugins settings API",
        version=__version__,
        description="An account's SIEM integration: its settings (S3 bucket, JSON or "
        "SYSLOG, the events that trigger an email), its health, and tests. Every request "
        "needs `Authorization: Bearer <token>` (`siem-plugins tokens create`).",
        docs_url=None,
        redoc_url=None,
    )
    app.state.rt = rt
    app.state.auth = Authenticator(rt.control)
    app.include_router(api.router())
    app.include_router(pages.router())
    app.mount("/static", pages.static_files(), name="static")  # the page's style.css
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret,
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE_S,
        same_site="strict",
        https_only=secure_cookies,
    )

    @app.middleware("http")
    async def headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(SettingsError)
    async def settings_error(request: Request, exc: SettingsError) -> Response:
        if request.url.path.startswith("/api/"):
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return JSONResponse(exc.body(), status_code=exc.status, headers=headers)
        return pages.error_page(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ())[1:]), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse(
                {"errors": [{"field": "", "message": str(exc.detail)}]},
                status_code=exc.status_code,
            )
        # The same page as a missing account's, for a page that does not exist.
        message = "no such integration" if exc.status_code == 404 else str(exc.detail)
        return pages.error_page(request, SettingsError(exc.status_code, message))

    return app


def serve(app: Any, *, sock: socket.socket) -> None:
    """Serve on a bound socket until SIGTERM or SIGINT (uvicorn's own handling: in-flight
    requests finish). The socket is bound by the caller, so ``--port 0`` can say which
    port it got before serving."""
    import uvicorn

    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
