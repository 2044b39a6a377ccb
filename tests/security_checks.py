"""What a visitor without credentials, and a user naming files, can get from a real server: shared by
``tests/test_security.py`` and ``bench/reliability.py --part security`` (which writes the figures to
``docs/RELIABILITY.md``).

- :func:`walk_routes`: every route of the app (``app.routes``, through the Gradio mount, every method), each
  asked once without credentials; what answers what.
- :data:`PUBLIC`: what may answer before a login (the login page, the login form, Gradio's static build).
- :func:`traversal_attempts`: every API parameter that names a file, each given paths that leave its folder.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

# What may answer a visitor who has not logged in (--gradio-auth and --api-auth both set): (method, path regex).
PUBLIC = [
    ("GET", r"/"), ("HEAD", r"/"),
    ("POST", r"/login/?"),
    ("GET", r"/assets/.*"), ("HEAD", r"/assets/.*"), ("GET", r"/static/.*"), ("HEAD", r"/static/.*"),
    ("GET", r"/theme\.css"), ("HEAD", r"/theme\.css"), ("GET", r"/favicon\.ico"), ("HEAD", r"/favicon\.ico"),
]

# Requests a visitor may try beyond the routes' own shapes (queries, encodings, Gradio's known leaks).
EXTRA_PROBES = [
    ("GET", "/?all_endpoints=true"), ("GET", "/?view=api"), ("GET", "/?deep_link=x"), ("GET", "/gradio_api/runs"),
    ("GET", "/gradio_api/info?all_endpoints=true"), ("POST", "/gradio_api/cancel"), ("POST", "/gradio_api/reset"),
    ("GET", "/config"), ("GET", "/gradio_api/file=/etc/passwd"), ("GET", "/gradio_api/file=launch.py"),
    ("GET", "/gradio_api/queue/data?session_hash=x"), ("GET", "/gradio_api/heartbeat/x"),
    ("GET", "/gradio_api/startup-events"), ("GET", "/gradio_api/app_id"), ("GET", "/gradio_api/token"),
    ("POST", "/gradio_api/upload"), ("GET", "/monitoring/x"), ("GET", "/gradio_api/openapi.json"),
    ("GET", "/assets/..%2f..%2f..%2fetc%2fpasswd"), ("GET", "/static/%2e%2e/%2e%2e/routes.py"),
    ("GET", "/gradio_api/file=%2fetc%2fpasswd"), ("POST", "/gradio_api/queue/join"), ("POST", "/gradio_api/run/txt2img"),
    ("POST", "/gradio_api/call/txt2img"), ("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/sdapi/v1/options"),
]


def is_public(method: str, path: str) -> bool:
    bare = path.split("?", 1)[0]
    return any(method == m and re.fullmatch(pattern, bare) for m, pattern in PUBLIC)


def app_routes(app, prefix: str = "") -> list[tuple[str, str]]:
    """``(method, path template)`` for every route of ``app``, mounted apps included (websockets as ``WS``)."""
    from starlette.routing import Mount, WebSocketRoute

    found = []
    for route in app.routes:
        if isinstance(route, Mount):
            inner = getattr(route, "_base_app", route.app)
            inner = getattr(inner, "app", inner) if not hasattr(inner, "routes") else inner
            found += app_routes(inner, prefix + route.path)
        elif hasattr(route, "original_router"):  # FastAPI's included router: its routes, under its prefix
            context = getattr(route, "include_context", None)
            found += app_routes(route.original_router, prefix + (getattr(context, "prefix", "") or ""))
        elif isinstance(route, WebSocketRoute):
            found.append(("WS", prefix + route.path))
        else:
            for method in sorted(getattr(route, "methods", None) or {"GET"}):
                found.append((method, prefix + route.path))
    return sorted(set(found))


def concrete(path: str) -> str:
    """A route template with its parameters filled in (``{path:path}`` -> ``x/y``, ``{name}`` -> ``x``)."""
    path = re.sub(r"\{[^}:]+:path\}", "x/y", path)
    return re.sub(r"\{[^}]+\}", "x", path) or "/"


def build_like(server) -> object:
    """The app the test ``server`` runs, built in this process (not served) to list its routes."""
    import json

    from extension.ui.app import build_app
    from extension.ui.state import ServeOptions, build_state

    options = dict(json.loads(json.dumps(server.options)))
    for key in ("hypernetwork_dir", "ckpt_dir", "outdir", "ui_settings_file", "gradio_auth_path", "scripts_dir"):
        if options.get(key):
            options[key] = Path(options[key])
    options["ui_settings_file"] = None
    return build_app(build_state(ServeOptions(**options)))


@dataclasses.dataclass
class Walk:
    answers: list  # (method, path, status, public)

    @property
    def leaks(self) -> list:
        """Non-public requests that got anything but a refusal (401, or 403/404/405 from the gate or routing)."""
        return [a for a in self.answers if not a[3] and a[2] not in (401,)]


def walk_routes(base_url: str, routes: list[tuple[str, str]], extra=EXTRA_PROBES, timeout: float = 30.0) -> Walk:
    """Ask every route once without credentials (a websocket gets a handshake)."""
    import requests

    answers = []
    for method, template in [*routes, *extra]:
        path = concrete(template) if "{" in template else template
        if method == "WS":
            answers.append((method, path, websocket_status(base_url, path), False))
            continue
        response = requests.request(method, base_url + path, timeout=timeout, allow_redirects=False,
                                    json={} if method in ("POST", "PUT", "PATCH") else None, stream=True)
        status = response.status_code
        response.close()
        answers.append((method, path, status, is_public(method, path)))
    return Walk(answers)


def websocket_status(base_url: str, path: str) -> int:
    """The HTTP status a websocket handshake on ``path`` gets (101: accepted)."""
    import base64
    import os
    import socket
    from urllib.parse import urlparse

    url = urlparse(base_url)
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        line = sock.recv(1024).split(b"\r\n", 1)[0].decode(errors="replace")
    return int(line.split()[1]) if line.startswith("HTTP/") else 0


# -- path traversal --------------------------------------------------------------------------------------------
# Paths that leave a folder on POSIX ("..\\x" and "%2e%2e" are names inside one there; the HTTP probes try those).
OUTSIDE = ["../../../../etc/passwd", "/etc/passwd", "..", "../", "a/../../b", "/etc", "~/.ssh", "x\u0000y",
           "/proc/self/environ", "../" * 12 + "tmp/evil-outside"]


def traversal_attempts(network: str, data_root: str) -> list[tuple[str, str, dict]]:
    """``(route, field, body)`` for every API parameter that names a file, each with paths that leave its folder
    (``network``: a hypernetwork that exists; ``data_root``: a dataset inside the training folders)."""
    attempts = []
    for bad in OUTSIDE:
        # in a tag, an unknown name inside the folder ("~/x", "..\\x" on POSIX) is reported in info: only paths
        # that leave the folder must be refused there
        if Path(bad).is_absolute() or ".." in Path(bad).parts:
            attempts.append(("txt2img", "prompt <hypernet:>",
                             {"prompt": f"a <hypernet:{bad}:1>", "steps": 1, "width": 32, "height": 32}))
        attempts += [
            ("txt2img", "override_settings.sd_hypernetwork",
             {"prompt": "a", "steps": 1, "width": 32, "height": 32, "override_settings": {"sd_hypernetwork": bad}}),
            ("txt2img", "override_settings.sd_model_checkpoint",
             {"prompt": "a", "steps": 1, "width": 32, "height": 32, "override_settings": {"sd_model_checkpoint": bad}}),
            ("options", "sd_model_checkpoint", {"sd_model_checkpoint": bad}),
            ("options", "sd_hypernetwork", {"sd_hypernetwork": bad}),
            ("create/hypernetwork", "name", {"name": bad, "enable_sizes": [48]}),
            ("train/hypernetwork", "hypernetwork_name", {"hypernetwork_name": bad, "data_root": data_root}),
            ("train/hypernetwork", "data_root", {"hypernetwork_name": network, "data_root": bad, "steps": 1}),
            ("train/hypernetwork", "log_directory",
             {"hypernetwork_name": network, "data_root": data_root, "log_directory": bad, "steps": 1}),
            ("train/hypernetwork", "template_filename",
             {"hypernetwork_name": network, "data_root": data_root, "template_filename": bad, "steps": 1}),
        ]
    return attempts


def security_report(quick: bool = False) -> str:
    """Start the servers the tests start, run the checks, and say what held (Markdown)."""
    import tempfile

    from api_server import ApiServer
    from builders import make_hypernetwork_dir

    with tempfile.TemporaryDirectory(prefix="security-") as folder:
        tmp = Path(folder)
        make_hypernetwork_dir(tmp / "hypernetworks")
        data = tmp / "server" / "data"
        data.mkdir(parents=True)
        with ApiServer(tmp / "server", tmp / "hypernetworks", gradio_auth="page:secret",
                       api_auth="api:secret") as server:
            routes = app_routes(build_like(server))
            walk = walk_routes(server.url, routes)
            auth = ("api", "secret")
            import requests

            results = []
            for route, field, body in traversal_attempts("demo_style", str(data)):
                response = requests.post(f"{server.api}/{route}", json=body, auth=auth, timeout=300)
                results.append((route, field, response.status_code))
            files_outside = sorted(str(p) for p in Path("/tmp").glob("evil*"))
    statuses = {}
    for _, _, status in results:
        statuses[status] = statuses.get(status, 0) + 1
    by_field = {}
    for route, field, status in results:
        by_field.setdefault(f"{route}: {field}", set()).add(status)
    walked = [a for a in walk.answers if a[0] != "WS"]
    lines = ["## Logins, file names and file routes",
             "",
             "A real server (UI and API, `--gradio-auth` and `--api-auth`, on 127.0.0.1) asked by a visitor without "
             "credentials, then by an API user naming files outside their folders.",
             "",
             "| what | figure |", "|---|---|",
             f"| routes of the app (`app.routes` through the Gradio mount), by method | "
             f"{len([r for r in routes if r[0] != 'WS'])} (+{len([r for r in routes if r[0] == 'WS'])} websocket) |",
             f"| requests without credentials (every route, plus {len(EXTRA_PROBES)} probes: queries, encodings, "
             f"Gradio's known leaks) | {len(walk.answers)} |",
             f"| answered 401 | {sum(1 for a in walk.answers if a[2] == 401)} |",
             f"| public and answering (login page, login form, Gradio's static build) | "
             f"{sum(1 for a in walked if a[3])} |",
             f"| anything else answering (leaks) | {len(walk.leaks)} |",
             f"| path traversal attempts on {len(by_field)} file-naming API fields x {len(OUTSIDE)} paths | "
             f"{len(results)} |",
             f"| ... refused with a 4xx | {sum(c for s, c in statuses.items() if 400 <= s < 500)} |",
             f"| ... answered 2xx or 5xx | {sum(c for s, c in statuses.items() if not 400 <= s < 500)} |",
             f"| files written outside the server's folders | {len(files_outside)} |",
             "",
             "Statuses of the traversal attempts by field: " + "; ".join(
                 f"{field} {sorted(s)}" for field, s in sorted(by_field.items())) + "."]
    if walk.leaks:
        lines += ["", "Leaks: " + ", ".join(f"{m} {p} -> {s}" for m, p, s, _ in walk.leaks)]
    return "\n".join(lines)
