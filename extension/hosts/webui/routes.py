"""The hypernetwork routes of ``/sdapi/v1`` on the host's server, as AUTOMATIC1111 clients call them.

Forge still registers ``GET /hypernetworks`` (``.pt`` files of its own list only) and a ``create/hypernetwork``
that answers 500; Forge Classic and Neo have neither. The first matching route wins in FastAPI, so the host's
routes of these paths are taken out before ours go in (and ours, on a second call, before they go in again).
Every route honours the host's ``--api-auth`` (HTTP Basic, as the host's own routes: routes added on the app
directly would get none).
"""
from __future__ import annotations

import secrets
from typing import Any, Optional

from fastapi import Body, Depends, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from . import folder, model

PREFIX = "/sdapi/v1"
LIST, REFRESH, CREATE, TRAIN = (f"{PREFIX}/hypernetworks", f"{PREFIX}/refresh-hypernetworks",
                                f"{PREFIX}/create/hypernetwork", f"{PREFIX}/train/hypernetwork")
OURS = (LIST, REFRESH, CREATE, TRAIN)
DEFAULT_SIZES = [768, 320, 640, 1280]  # AUTOMATIC1111's Create default, for when no model is loaded


def host_credentials() -> dict[str, str]:
    """``--api-auth`` as the host reads it: ``user:password`` pairs separated by commas."""
    from modules import shared

    pairs = {}
    for item in (getattr(shared.cmd_opts, "api_auth", None) or "").split(","):
        user, sep, password = item.strip().partition(":")
        if sep:
            pairs[user] = password
    return pairs


def _basic(credentials: Optional[HTTPBasicCredentials] = Depends(HTTPBasic(auto_error=False))) -> None:
    wanted = host_credentials()
    if not wanted:
        return
    if credentials is not None and credentials.username in wanted and secrets.compare_digest(
            credentials.password.encode(), wanted[credentials.username].encode()):
        return
    raise HTTPException(status_code=401, detail="Incorrect username or password",
                        headers={"WWW-Authenticate": "Basic"})


def list_hypernetworks() -> list[dict]:
    """Every file of the folder (``.pt``, ``.safetensors``, ``.ckpt``, subfolders), with the error of a file that
    cannot be used (AUTOMATIC1111's ``name`` and ``path``, plus ``error``: null when it loads)."""
    library = folder.library()
    return [{"name": entry.name, "path": str(entry.path), "error": library.details(entry).error}
            for entry in library.entries()]


def refresh_hypernetworks() -> dict:
    report = folder.library().refresh()
    return {"added": list(report.added), "changed": list(report.changed), "removed": list(report.removed)}


def create_hypernetwork(args: dict[str, Any] = Body(...)) -> dict:
    """AUTOMATIC1111's Create (its argument names); what is missing takes the Train tab's default, and
    ``enable_sizes`` the loaded model's attention widths."""
    from modules import shared

    from ...training import TrainingError
    from ...training import create_hypernetwork as create
    from ...training.create import NameTaken

    if not isinstance(args, dict) or not isinstance(args.get("name"), str) or not args["name"].strip():
        raise HTTPException(status_code=422, detail="name: a hypernetwork name is required")
    sizes = args.get("enable_sizes") or sorted(model.attention_widths(shared.sd_model) or DEFAULT_SIZES)
    try:
        sizes = [int(size) for size in sizes]
    except (TypeError, ValueError):
        raise HTTPException(status_code=422,
                            detail=f"enable_sizes must be attention widths (whole numbers), got {sizes!r}") from None
    try:
        path = create(args["name"], folder.library(), sizes=sizes,
                      layer_structure=args.get("layer_structure") or "1, 2, 1",
                      activation_func=args.get("activation_func") or "linear",
                      weight_init=args.get("weight_init") or args.get("weight_initialization") or "Normal",
                      add_layer_norm=bool(args.get("add_layer_norm", False)),
                      use_dropout=bool(args.get("use_dropout", False)),
                      dropout_structure=args.get("dropout_structure") or "0, 0, 0",
                      activate_output=bool(args.get("activate_output", False)),
                      overwrite=bool(args.get("overwrite_old", False)),
                      file_format=str(args.get("file_format") or "safetensors"))
    except TrainingError as exc:
        status = 409 if isinstance(exc, NameTaken) else 422
        raise HTTPException(status_code=status, detail=str(exc)) from None
    return {"info": f"create hypernetwork filename: {path}"}


def install_routes(app, train_route=None) -> None:
    """Replace the host's hypernetwork routes on ``app`` with ours (idempotent).

    Args:
        app: the host's FastAPI app (``on_app_started``'s second argument).
        train_route: the handler of ``POST train/hypernetwork`` (:mod:`.training`), if training is offered.
    """
    app.router.routes[:] = [route for route in app.router.routes if getattr(route, "path", None) not in OURS]
    auth = [Depends(_basic)]
    app.add_api_route(LIST, list_hypernetworks, methods=["GET"], dependencies=auth, tags=["hypernetworks"],
                      summary="Every hypernetwork file (every format)")
    app.add_api_route(REFRESH, refresh_hypernetworks, methods=["POST"], dependencies=auth, tags=["hypernetworks"],
                      summary="Rescan the hypernetworks folder")
    app.add_api_route(CREATE, create_hypernetwork, methods=["POST"], dependencies=auth, tags=["hypernetworks"],
                      summary="Create a hypernetwork")
    if train_route is not None:
        app.add_api_route(TRAIN, train_route, methods=["POST"], dependencies=auth, tags=["hypernetworks"],
                          summary="Train a hypernetwork")
    app.openapi_schema = None  # the schema at /docs is made afresh with these routes
