"""AUTOMATIC1111's REST API (``/sdapi/v1``) on this project: what bots, scripts and client libraries such as
``webuiapi`` call, unchanged.

- :mod:`.schemas`: the request and response models, in AUTOMATIC1111's field names;
- :mod:`.options`: AUTOMATIC1111's option table on the app's settings (the Settings tab shows the same);
- :mod:`.routes`: the handlers, over :class:`~extension.ui.state.AppState` and its one job runner;
- :mod:`.auth`: HTTP Basic (``--api-auth``).

``--api`` adds the routes to the UI's server (:func:`mount_api`, before Gradio's catch-all mount);
``--nowebui`` serves them alone (:func:`api_app`). The schema is at ``/docs`` and ``/openapi.json``.
"""
from __future__ import annotations

TITLE = "Stable Diffusion hypernetworks API"


def mount_api(app, ctx) -> None:
    """Add every ``/sdapi/v1`` route to the FastAPI ``app`` for the app state ``ctx``."""
    from .routes import mount_api as mount

    mount(app, ctx)


def add_missing_route_answer(app, ctx) -> None:
    """After every other route: a path under ``/sdapi`` no route serves gets a 404 (or 405) in the API's own
    error shape."""
    from .routes import add_missing_route_answer as add

    add(app, ctx)


def api_app(ctx, configure=None):
    """A FastAPI app serving the API alone (``--nowebui``); ``configure(app, ctx)`` and scripts' ``app_started``
    callbacks run on it. Every error, an unknown path's included, is answered in the API's error shape."""
    from fastapi import FastAPI
    from starlette.exceptions import HTTPException

    from .routes import error_response

    app = FastAPI(title=TITLE, description="AUTOMATIC1111's /sdapi/v1 API (no web UI on this server)")
    app.state.webui = ctx
    mount_api(app, ctx)
    if configure is not None:
        configure(app, ctx)
    ctx.callbacks.call_each("app_started", ctx, app)
    add_missing_route_answer(app, ctx)
    from ..host_header import install_host_guard

    install_host_guard(app, ctx.options)  # a foreign Host name reaches no route (DNS rebinding)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):  # a path outside /sdapi (FastAPI's own 404 and 405)
        kind = {404: "NoSuchRoute", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPException")
        detail = (f"no such route: {request.method} {request.url.path} (the API's routes are listed at /docs)"
                  if exc.status_code == 404 else str(exc.detail))
        return error_response(exc.status_code, kind, detail, headers=getattr(exc, "headers", None))

    return app


__all__ = ["add_missing_route_answer", "api_app", "mount_api"]
