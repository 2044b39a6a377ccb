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


def api_app(ctx):
    """A FastAPI app serving the API alone (``--nowebui``); scripts' ``app_started`` callbacks run on it."""
    from fastapi import FastAPI

    app = FastAPI(title=TITLE, description="AUTOMATIC1111's /sdapi/v1 API (no web UI on this server)")
    app.state.webui = ctx
    mount_api(app, ctx)
    ctx.callbacks.call_each("app_started", ctx, app)
    return app


__all__ = ["api_app", "mount_api"]
