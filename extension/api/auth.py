"""HTTP Basic for the API (``--api-auth user:pass[,user2:pass2]``, ``--api-auth-path FILE``).

Every ``/sdapi`` route depends on :func:`basic_auth` when credentials are configured; a missing or wrong
user or password is a 401 with ``WWW-Authenticate: Basic``. Passwords are compared in constant time.
"""
from __future__ import annotations

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
        expected = credentials.get(given.username)
        # compare something in either case, so an unknown user takes as long as a wrong password
        ok = secrets.compare_digest(given.password.encode(), (expected or "\0" + given.password).encode())
        if expected is None or not ok:
            raise HTTPException(401, "incorrect username or password", headers={"WWW-Authenticate": "Basic"})
        return given.username

    return check
