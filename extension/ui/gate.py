"""The gate in front of the mounted Gradio app: the login (``--gradio-auth``) on every Gradio route, and the
file routes confined to the output and models folders.

Gradio 6.31's own ``auth`` checks only some of its routes. Without a login it still serves, among others:
the page ``GET /`` with ``window.gradio_api_info`` (every endpoint, with the hypernetwork and checkpoint
names as example values; ``/?all_endpoints=true`` adds the private ones), ``/gradio_api/runs`` (the same
page), ``POST /gradio_api/cancel`` and ``/gradio_api/reset`` (200), ``/gradio_api/heartbeat``,
``/gradio_api/stream/...``, ``/gradio_api/startup-events``, ``/gradio_api/app_id``, ``/gradio_api/token``,
``/gradio_api/custom_component/...``, the ``/monitoring/{key}`` dashboard and the vibe-edit routes.

:class:`LoginGate` wraps the mounted app (:func:`install_gate`), so it sees every request Gradio would see
and none of the app's own routes (``/sdapi``, ``/docs``: :mod:`extension.api.auth` guards those). With
credentials, before a login it lets through only:

- ``GET``/``HEAD /`` (any query): the login page, rendered here from Gradio's template with an empty API
  description and the login form's config (no component, no endpoint, no name);
- ``POST /login``: the login form;
- the static files the login page loads (:data:`PUBLIC_PREFIXES`, :data:`PUBLIC_PATHS`: Gradio's own build,
  fonts, theme and icon, nothing of the app).

Anything else is a 401 (a websocket is closed with 1008) until the request carries Gradio's session cookie,
which ``/login`` sets (``gradio_client.Client(url, auth=(user, password))`` logs in that way too). Without credentials the
gate lets everything through but the file rule:

``/gradio_api/file=PATH`` (and the older ``/gradio_api/file/PATH``) serves only files whose real path (links
followed) lies in the output folder or a models folder (:func:`file_roots`; Gradio's own temporary folder is
put inside the output folder by :func:`extension.ui.app.serve`); a URL or anything else is a 403, before
Gradio's own checks run. Gradio would also fetch ``http(s)://`` URLs there for the page; nothing here needs it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable
from urllib.parse import unquote

# What the login page itself loads before anyone logs in (seen in a browser: the page, Gradio's build, its fonts
# and theme), and the icon browsers ask for. None of it depends on the app.
PUBLIC_PREFIXES = ("/assets/", "/static/")
PUBLIC_PATHS = frozenset({"/favicon.ico", "/theme.css"})
LOGIN_PATHS = frozenset({"/login", "/login/"})
PAGE_PATHS = frozenset({"", "/"})
FILE_PREFIXES = ("/gradio_api/file=", "/gradio_api/file/")

NOT_LOGGED_IN = "not logged in: this server runs with --gradio-auth; log in on its page (/) first"


def file_roots(options) -> list[Path]:
    """The folders a file route may serve from: the output folder and the models folders (real paths)."""
    roots = [options.outdir, options.hypernetwork_dir, options.ckpt_dir]
    temp = os.environ.get("GRADIO_TEMP_DIR")
    if temp:  # where Gradio keeps the images it shows (serve() puts it under the output folder)
        roots.append(temp)
    return [Path(os.path.realpath(root)) for root in roots if root]


def is_inside(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


class LoginGate:
    """ASGI middleware around Gradio's app: see the module's docstring.

    Args:
        app: the mounted Gradio app (``gradio.routes.App``).
        credentials: ``{user: password}``; empty means no login (only the file rule applies).
        file_roots: the folders the file routes may serve from.
    """

    def __init__(self, app, credentials: dict[str, str], file_roots: Iterable[Path]):
        self.app = app
        self.credentials = dict(credentials)
        self.file_roots = [Path(os.path.realpath(root)) for root in file_roots]

    # -- the ASGI entry --------------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = route_path(scope)
        method = scope.get("method", "GET")
        if scope["type"] == "http" and path.startswith(FILE_PREFIXES) and method in ("GET", "HEAD"):
            reason = self.refuse_file(path)
            if reason is not None and (not self.credentials or self.logged_in(scope)):
                return await respond(send, 403, {"detail": reason})
        if not self.credentials or self.logged_in(scope):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008, "reason": "not logged in"})
        if path in PAGE_PATHS and method in ("GET", "HEAD"):
            return await self.login_page(scope, receive, send)
        if (path in LOGIN_PATHS and method == "POST") or (method in ("GET", "HEAD") and (
                path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES))):
            return await self.app(scope, receive, send)
        return await respond(send, 401, {"detail": NOT_LOGGED_IN}, method == "HEAD")

    # -- who is asking ---------------------------------------------------------------------------------------
    def logged_in(self, scope) -> bool:
        """Whether the request carries a session cookie Gradio's ``/login`` set (read as Gradio reads it)."""
        from starlette.requests import cookie_parser

        cookie_id = getattr(self.app, "cookie_id", None)
        tokens = getattr(self.app, "tokens", None) or {}
        if cookie_id is None:
            return False
        names = (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}")
        for key, value in scope.get("headers", []):
            if key.lower() == b"cookie":
                cookies = cookie_parser(value.decode("latin-1"))
                if any(tokens.get(cookies.get(name)) is not None for name in names):
                    return True
        return False

    # -- files -----------------------------------------------------------------------------------------------
    def refuse_file(self, path: str) -> str | None:
        """Why a file route must not serve ``path`` (None: it may, as far as the folders go)."""
        prefix = next(p for p in FILE_PREFIXES if path.startswith(p))
        target = unquote(path[len(prefix):])
        if "\0" in target:
            return "file routes serve files of the output and models folders only"
        from gradio.route_utils import starts_with_protocol

        if starts_with_protocol(target) or ":" in target.split("/", 1)[0] and not Path(target).is_absolute():
            return "file routes serve local files of the output and models folders only, not URLs"
        real = Path(os.path.realpath(Path(target) if Path(target).is_absolute() else Path.cwd() / target))
        if not is_inside(real, self.file_roots):
            return "file routes serve files of the output and models folders only"
        return None

    # -- the login page ----------------------------------------------------------------------------------------
    async def login_page(self, scope, receive, send):
        """Gradio's page as it shows the login form, without the API description it would also send."""
        from fastapi import Request
        from gradio import route_utils
        from gradio.routes import templates

        request = Request(scope, receive)
        blocks = self.app.get_blocks()
        root = route_utils.get_root_url(request=request, route_path="/",
                                        root_path=self.app.root_path or scope.get("root_path") or None)
        config = {"auth_required": True, "auth_message": blocks.auth_message, "space_id": blocks.space_id,
                  "root": root, "page": {"": {"layout": {}}}, "pages": [""], "components": [], "dependencies": [],
                  "current_page": ""}
        response = templates.TemplateResponse(request=request, name="frontend/index.html",
                                              context={"base_url": "./", "config": config, "gradio_api_info": {}})
        await response(scope, receive, send)


def route_path(scope) -> str:
    """The request's path inside the mounted app (without the mount's ``root_path``)."""
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root):]
    return path


async def respond(send, status: int, body: dict, head: bool = False) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else data})


def install_gate(app, credentials: dict[str, str], roots: Iterable[Path]) -> LoginGate:
    """Wrap the Gradio app mounted on the FastAPI ``app`` in a :class:`LoginGate`; returns the gate."""
    from gradio.routes import App as GradioApp
    from starlette.routing import Mount

    for route in app.routes:
        if isinstance(route, Mount) and isinstance(getattr(route, "_base_app", route.app), GradioApp):
            gate = LoginGate(route._base_app if hasattr(route, "_base_app") else route.app, credentials, roots)
            route.app = gate
            return gate
    raise RuntimeError("no Gradio app is mounted on this app")
