"""The ``Host`` names the server answers to: a guard against DNS rebinding.

A web page on ``evil.example`` can point its own name at 127.0.0.1 once the browser has loaded it; its scripts
then reach a server bound to loopback as same-origin, and could generate, train or change options. The browser
still sends ``Host: evil.example``, so a server that answers only to the names it is known by is safe from it.

Accepted, on every server:
- an IP address (``127.0.0.1``, ``[::1]``, a LAN address with ``--listen``): no page can rebind an address;
- ``localhost`` (and ``*.localhost``, which browsers resolve to loopback themselves);
- ``--server-name``, when given;
- each name of ``--allowed-hosts`` (comma-separated; ``*`` accepts any name, the check off).

With ``--listen`` the machine's own host name is accepted too. Anything else gets a 403 in the API's error shape
(a WebSocket is closed), on the page's routes and the API's alike. A request without a ``Host`` header (HTTP/1.0)
cannot come from a browser and is served.
"""
from __future__ import annotations

import ipaddress
import json
import socket
from typing import Iterable

ANY = "*"
FLAG = "--allowed-hosts"


def bare_host(value: str) -> str:
    """``value`` of a ``Host`` header without its port, lower-cased, without a trailing dot or IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:7860
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class AllowedHosts:
    """The names a server answers to (see the module's docstring).

    Args:
        names: ``--allowed-hosts`` entries and ``--server-name``; ``*`` allows any.
        listen: ``--listen``: the machine's own host names are allowed too.
    """

    def __init__(self, names: Iterable[str] = (), *, listen: bool = False):
        self.names = {bare_host(name) for name in names if name and name.strip()}
        self.any = ANY in self.names
        if listen:
            hostname = socket.gethostname()
            self.names |= {bare_host(hostname), bare_host(hostname.split(".", 1)[0])}

    @classmethod
    def from_options(cls, options) -> "AllowedHosts":
        """From a server's options: ``allowed_hosts`` (a comma-separated text, or a list), ``server_name`` and
        ``listen``."""
        raw = getattr(options, "allowed_hosts", None) or ()
        if isinstance(raw, str):
            raw = [raw]
        names = [part for item in raw for part in str(item).split(",")]
        server_name = getattr(options, "server_name", None)
        return cls([*names, *([server_name] if server_name else [])], listen=bool(getattr(options, "listen", False)))

    def allows(self, header: str | None) -> bool:
        if self.any or header is None:
            return True
        host = bare_host(header)
        return (is_address(host) or host == "localhost" or host.endswith(".localhost") or host in self.names)


class HostHeaderGuard:
    """ASGI middleware: requests whose ``Host`` is not allowed get a 403 before any route sees them."""

    def __init__(self, app, allowed: AllowedHosts):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        header = next((value.decode("latin-1") for key, value in scope.get("headers", ()) if key == b"host"), None)
        if self.allowed.allows(header):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return None
        host = bare_host(header or "")
        body = json.dumps({"error": "HostNotAllowed", "detail": (
            f"this server does not answer to the host name {host!r} (a guard against DNS rebinding); "
            f"open it as http://127.0.0.1 or http://localhost, or start it with {FLAG} {host}")}).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return None


def install_host_guard(app, options) -> None:
    """Put :class:`HostHeaderGuard` in front of every route of the FastAPI ``app``, for the server's options."""
    app.add_middleware(HostHeaderGuard, allowed=AllowedHosts.from_options(options))


__all__ = ["AllowedHosts", "HostHeaderGuard", "install_host_guard", "bare_host"]
