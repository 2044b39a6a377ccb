"""HTTP Basic for the API (``--api-auth user:pass[,user2:pass2]``, ``--api-auth-path FILE``).

Every ``/sdapi`` route depends on :func:`basic_auth` when credentials are configured; a missing or wrong
user or password is a 401 with ``WWW-Authenticate: Basic``. Passwords are compared in constant time.

The schema (``/openapi.json``, ``/docs``, ``/docs/oauth2-redirect``, ``/redoc``) is behind the same credentials
(:class:`SchemaAuth`): AUTOMATIC1111 leaves it open, but it lists the server's options and flags with their
current defaults, so here it asks what ``/sdapi`` asks (a browser shows its login dialog). Without
``--api-auth`` it is open, as the API is.
"""
from __future__ import annotations

import base64
import binascii
import json
import secrets

from fastapi import Depends, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials


def api_credentials(api_auth: str | None, api_auth_path=None) -> dict[str, str]:
    """``{user: password}`` from the flags (the syntax of ``--gradio-auth``: pairs separated by commas, and in
    the file by lines too, ``#`` starting a comment); empty when neither is set. A malformed pair stops the
    server with a message."""
    from pathlib import Path

    texts = [api_auth] if api_auth else []
    if api_auth_path:
        try:
            lines = Path(api_auth_path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise SystemExit(f"--api-auth-path: cannot read {api_auth_path}: {exc}") from None
        texts += [line for line in lines if line.strip() and not line.strip().startswith("#")]
    pairs: dict[str, str] = {}
    for text in texts:
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            user, sep, password = item.partition(":")
            if not sep or not user:
                raise SystemExit(f"--api-auth: {item!r} is not user:password")
            pairs[user] = password
    return pairs


def basic_auth(credentials: dict[str, str]):
    """A FastAPI dependency that admits only ``credentials``."""
    security = HTTPBasic(auto_error=False, description="--api-auth user:password")

    def check(given: HTTPBasicCredentials | None = Depends(security)) -> str:
        if given is None:
            raise HTTPException(401, "this API needs HTTP Basic credentials (the server runs with --api-auth)",
                                headers={"WWW-Authenticate": "Basic"})
        if not credentials_ok(credentials, given.username, given.password):
            raise HTTPException(401, "incorrect username or password", headers={"WWW-Authenticate": "Basic"})
        return given.username

    return check


def credentials_ok(credentials: dict[str, str], user: str, password: str) -> bool:
    """Whether ``user``/``password`` is one of ``credentials`` (constant time whatever the user)."""
    expected = credentials.get(user)
    ok = secrets.compare_digest(password.encode(), (expected if expected is not None else "\0" + password).encode())
    return expected is not None and ok


SCHEMA_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


class SchemaAuth:
    """ASGI middleware: the schema routes (:data:`SCHEMA_PATHS`) need the API's HTTP Basic credentials."""

    def __init__(self, app, credentials: dict[str, str]):
        self.app = app
        self.credentials = dict(credentials)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path", "").rstrip("/") not in SCHEMA_PATHS or self.admitted(scope):
            return await self.app(scope, receive, send)
        body = json.dumps({"error": "Unauthorized", "detail": "the API schema needs the API's HTTP Basic "
                                                              "credentials (the server runs with --api-auth)"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b'Basic realm="API"')]})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})

    def admitted(self, scope) -> bool:
        for key, value in scope.get("headers", []):
            if key.lower() != b"authorization":
                continue
            scheme, _, encoded = value.decode("latin-1").partition(" ")
            if scheme.lower() != "basic":
                continue
            try:
                user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                continue
            if sep and credentials_ok(self.credentials, user, password):
                return True
        return False
