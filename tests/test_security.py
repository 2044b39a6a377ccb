"""Logins, file names and exposure, against real servers on 127.0.0.1 (the random-weight demo model).

- ``secured``: the UI and the API with ``--gradio-auth`` and ``--api-auth``, training confined to one folder
  (``--train-data-dir``). Every route of the app (``app.routes``, through the Gradio mount) is asked without
  credentials: only the login page, the login form and Gradio's static build answer; the login page carries no
  name and no API description. Logged in, the page and gradio_client work, and the file routes serve only the
  output and models folders. Every API parameter that names a file refuses paths leaving its folder (4xx).
- ``listening``: ``--listen`` without any login: a warning at start, bound to every address; the file rule
  holds without a login too.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import requests

from api_server import ApiServer
from browser_utils import Server
from builders import make_hypernetwork_dir
from security_checks import EXTRA_PROBES, app_routes, build_like, is_public, traversal_attempts, walk_routes

PAGE = ("page", "open sesame")
API = ("api", "s3cret:pass")
NETWORK = "demo_style"
OTHER_CHECKPOINT = "hidden-checkpoint-name"


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    from extension.demo.architecture import build_random_pipeline
    from extension.demo.dataset import write_folder

    root = tmp_path_factory.mktemp("security")
    make_hypernetwork_dir(root / "hypernetworks")
    build_random_pipeline(seed=1).save_pretrained(root / "checkpoints" / OTHER_CHECKPOINT)
    train = root / "train"
    write_folder(train / "data", 2, seed=3, size=32)
    (train / "escape").symlink_to("/etc")  # a link inside the training folder to a folder outside it
    return {"root": root, "hypernetworks": root / "hypernetworks", "train": train}


@pytest.fixture(scope="module")
def secured(folders):
    tmp = folders["root"] / "secured"
    tmp.mkdir()
    with ApiServer(tmp, folders["hypernetworks"], ckpt_dir=folders["root"] / "checkpoints",
                   gradio_auth=":".join(PAGE), api_auth=":".join(API), train_data_dir=[str(folders["train"])]) as running:
        yield running


@pytest.fixture(scope="module")
def listening(folders):
    tmp = folders["root"] / "listening"
    tmp.mkdir()
    with Server(tmp, folders["hypernetworks"], listen=True, api=True) as running:
        yield running


def logged_in(server) -> requests.Session:
    session = requests.Session()
    answer = session.post(f"{server.url}/login", data={"username": PAGE[0], "password": PAGE[1]}, timeout=30)
    assert answer.status_code == 200, answer.text
    return session


# -- nothing but the login page before a login ------------------------------------------------------------------
def test_every_route_without_credentials_is_refused_but_the_login_page(secured):
    routes = app_routes(build_like(secured))
    methods = {method for method, _ in routes}
    assert len(routes) > 60 and {"GET", "POST", "HEAD"} <= methods  # the walk saw Gradio's routes and ours
    assert ("POST", "/gradio_api/cancel") in routes and ("POST", "/sdapi/v1/txt2img") in routes
    walk = walk_routes(secured.url, routes)
    assert walk.leaks == [], walk.leaks
    assert len(walk.answers) == len(routes) + len(EXTRA_PROBES)
    public = [(method, path, status) for method, path, status, public in walk.answers if public]
    assert ("GET", "/", 200) in public and ("GET", "/theme.css", 200) in public
    # Gradio's known leaks are closed
    for method, path in [("GET", "/gradio_api/runs"), ("POST", "/gradio_api/cancel"), ("POST", "/gradio_api/reset"),
                         ("GET", "/gradio_api/info"), ("GET", "/config")]:
        assert (method, path, 401) in [(m, p, s) for m, p, s, _ in walk.answers], (method, path)
    refused = requests.post(f"{secured.url}/gradio_api/cancel", json={}, timeout=30)
    assert refused.status_code == 401 and "log in" in refused.json()["detail"]


@pytest.mark.parametrize("query", ["", "?all_endpoints=true", "?view=api", "?__theme=dark"])
def test_the_login_page_names_nothing(secured, folders, query):
    page = requests.get(f"{secured.url}/{query}", timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    config = json.loads(re.search(r"window\.gradio_config = (.*?);</script>", page.text).group(1))
    assert config["auth_required"] is True and config["components"] == [] and config["dependencies"] == []
    assert "window.gradio_api_info = {};" in page.text
    names = [NETWORK, "demo_linear", OTHER_CHECKPOINT, "load_checkpoint", "queue_status", "txt2img",
             "sdapi", str(folders["root"])]
    assert [name for name in names if name in page.text] == []


def test_after_the_login_the_page_and_gradio_client_work(secured):
    from gradio_client import Client

    session = logged_in(secured)
    page = session.get(f"{secured.url}/", timeout=30)
    assert page.status_code == 200 and NETWORK in page.text and "load_checkpoint" in page.text
    assert session.get(f"{secured.url}/gradio_api/info", timeout=30).status_code == 200
    client = Client(secured.url, auth=PAGE, verbose=False)
    assert "idle" in client.predict(api_name="/queue_status")
    wrong = requests.post(f"{secured.url}/login", data={"username": PAGE[0], "password": "nope"}, timeout=30)
    assert wrong.status_code == 400


def test_the_schema_and_the_api_ask_for_the_api_credentials(secured):
    """The choice (see extension/api/auth.py): AUTOMATIC1111 leaves /docs and /openapi.json open; here they are
    behind --api-auth like /sdapi, since the schema lists the options and flags with their current defaults."""
    for path in ("/openapi.json", "/docs", "/redoc", "/sdapi/v1/sd-models", "/sdapi/v1/options"):
        refused = requests.get(secured.url + path, timeout=30)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic"), path
        assert requests.get(secured.url + path, auth=API, timeout=30).status_code == 200, path
    assert requests.get(secured.url + "/openapi.json", auth=(API[0], "wrong"), timeout=30).status_code == 401
    assert requests.get(secured.url + "/openapi.json", auth=PAGE, timeout=30).status_code == 401  # not the page's


# -- file routes -------------------------------------------------------------------------------------------------
def test_file_routes_serve_the_output_folder_and_nothing_outside(secured, folders):
    from gradio_client import Client

    client = Client(secured.url, auth=PAGE, verbose=False)
    gallery, infotext, *_ = client.predict("a red circle", "", steps=1, width=32, height=32, seed=1,
                                           api_name="/txt2img")
    assert len(gallery) == 1 and Path(gallery[0]["image"]).stat().st_size > 0  # downloaded through the file route
    temp = secured.outdir / ".gradio"  # Gradio's temporary folder, inside the output folder
    shown = [path for path in temp.rglob("*.png")]
    assert shown, list(temp.rglob("*"))
    session = logged_in(secured)
    assert session.get(f"{secured.url}/gradio_api/file={shown[0]}", timeout=30).status_code == 200
    (secured.outdir / "passwd-link").symlink_to("/etc/passwd")
    launch = Path(__file__).resolve().parent.parent / "launch.py"
    for target in ["/etc/passwd", str(launch), "launch.py", f"{secured.outdir}/../config.json",
                   f"{secured.outdir}/passwd-link", f"{temp}/../../config.json", "%2fetc%2fpasswd",
                   "http://127.0.0.1:9/x", "file:///etc/passwd", str(folders["train"] / "data" / "0000.png")]:
        for route in ("/gradio_api/file=", "/gradio_api/file/"):
            answer = session.get(f"{secured.url}{route}{target}", timeout=30)
            assert answer.status_code in (403, 404), (route, target, answer.status_code)
            assert b"root:" not in answer.content and b"import" not in answer.content


def test_the_file_rule_holds_without_a_login_too(listening):
    launch = Path(__file__).resolve().parent.parent / "launch.py"
    for target in ["/etc/passwd", str(launch), "http://127.0.0.1:9/x"]:
        answer = requests.get(f"{listening.url}/gradio_api/file={target}", timeout=30)
        assert answer.status_code == 403 and "output and models folders" in answer.json()["detail"], target


# -- exposure ----------------------------------------------------------------------------------------------------
def listening_addresses(pid: int) -> set[str]:
    import psutil

    return {c.laddr.ip for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def test_bound_to_loopback_unless_listen(secured, listening):
    assert listening_addresses(secured.process.pid) == {"127.0.0.1"}
    assert listening_addresses(listening.process.pid) == {"0.0.0.0"}


def test_listen_without_a_login_warns_at_start(secured, listening):
    log = listening.log()
    assert "WARNING: --listen without --gradio-auth" in log and "WARNING: --listen without --api-auth" in log
    assert "WARNING: --listen" not in secured.log()


def test_exposure_warnings_name_what_is_open():
    from extension.ui.app import exposure_warnings
    from extension.ui.state import ServeOptions

    assert exposure_warnings(ServeOptions(listen=False, api=True)) == []
    assert exposure_warnings(ServeOptions(listen=True, gradio_auth="a:b", api=True, api_auth="c:d")) == []
    only_api = exposure_warnings(ServeOptions(listen=True, gradio_auth="a:b", api=True))
    assert len(only_api) == 1 and "--api-auth" in only_api[0]
    assert len(exposure_warnings(ServeOptions(listen=True, nowebui=True))) == 1  # no page, so no page login


# -- file names in the API ---------------------------------------------------------------------------------------
def test_every_file_naming_parameter_refuses_traversal(secured, folders):
    outside_before = set(Path("/tmp").iterdir())
    for route, field, body in traversal_attempts(NETWORK, "data"):
        answer = secured.post(route, body, auth=API)
        assert 400 <= answer.status_code < 500, (route, field, body, answer.status_code, answer.text[:300])
        assert answer.json().get("detail"), (route, field)
    assert set(Path("/tmp").iterdir()) == outside_before  # nothing written outside
    assert not (folders["train"].parent / "etc").exists()
    assert secured.get("progress", auth=API).status_code == 200  # and the server serves on


@pytest.mark.parametrize("change,message", [
    ({"data_root": "/etc"}, "data_root: '/etc' is outside the folders training may use"),
    ({"data_root": "../secured"}, "outside the folders training may use"),
    ({"data_root": "escape"}, "data_root: 'escape' is outside"),  # a link inside the root to /etc
    ({"data_root": "escape/ssl"}, "outside the folders training may use"),
    ({"log_directory": "/tmp/evil-logs"}, "log_directory: '/tmp/evil-logs' is outside"),
    ({"log_directory": "../../../../tmp/evil-logs"}, "log_directory"),
    ({"template_filename": "../../etc/passwd"}, "template_filename"),
])
def test_training_folders_are_confined(secured, folders, change, message):
    body = {"hypernetwork_name": NETWORK, "data_root": "data", "steps": 1, **change}
    answer = secured.post("train/hypernetwork", body, auth=API)
    assert answer.status_code == 422 and message in answer.json()["detail"], answer.text
    assert not Path("/tmp/evil-logs").exists()


def test_a_prompt_too_costly_to_parse_is_a_422(secured):
    prompt = "((" * 120 + "[a:b:3]" + "))" * 120
    answer = secured.post("txt2img", {"prompt": prompt, "steps": 1, "width": 32, "height": 32}, auth=API)
    assert answer.status_code == 422 and "prompt: prompt editing: too many brackets" in answer.json()["detail"]
    negative = secured.post("txt2img", {"prompt": "a", "negative_prompt": "[x] " * 200 + "[a:b:1]", "steps": 1,
                                        "width": 32, "height": 32}, auth=API)
    assert negative.status_code == 422 and negative.json()["detail"].startswith("negative_prompt:")


def test_cmd_flags_list_the_training_folders(secured, folders):
    flags = secured.get("cmd-flags", auth=API).json()
    assert flags["train_data_dir"] == [str(folders["train"])] and flags["api_auth"] == "(hidden)"


# -- the same confinement in the UI's state and on the training command line ---------------------------------------
def test_app_state_training_is_confined(tmp_path):
    from extension.training import TrainingConfig, TrainingError
    from extension.ui.state import ServeOptions, build_state

    make_hypernetwork_dir(tmp_path / "hypernetworks")
    state = build_state(ServeOptions(hypernetwork_dir=tmp_path / "hypernetworks", ckpt_dir=tmp_path / "ckpt",
                                     outdir=tmp_path / "out", ui_settings_file=None, scripts_dir=tmp_path / "none",
                                     demo_random=True, device="cpu", train_data_dir=[tmp_path / "train"]))
    assert state.options.training_roots == (Path(os.path.realpath(tmp_path / "train")),)
    for field, value in [("data_root", "/etc"), ("data_root", "../hypernetworks"), ("log_directory", "/tmp"),
                         ("template_filename", "/etc/passwd")]:
        config = TrainingConfig.from_request({"hypernetwork_name": NETWORK, "data_root": "data", "steps": 1,
                                              field: value})
        with pytest.raises(TrainingError, match=f"{field}: .* is outside the folders training may use"):
            state.train(config, source="ui")


def test_training_command_line_is_confined(tmp_path, capsys):
    from extension.training.cli import train

    make_hypernetwork_dir(tmp_path / "hypernetworks")
    code = train(["--train-hypernetwork", NETWORK, "--dataset", "/etc", "--hypernetwork-dir",
                  str(tmp_path / "hypernetworks"), "--device", "cpu", "--train-data-dir", str(tmp_path)])
    assert code == 2 and "data_root: '/etc' is outside the folders training may use" in capsys.readouterr().err


def test_training_command_line_trusts_its_own_paths(tmp_path, monkeypatch, capsys, secured):
    """A path typed on one's own command line is the user's: a dataset, a template and a log folder outside the
    checkout, relative to the working folder, with no --train-data-dir. The same dataset sent to the server is
    still refused."""
    from extension.demo.dataset import write_folder
    from extension.training.cli import create, train

    hypernetworks = ["--hypernetwork-dir", str(tmp_path / "hypernetworks"), "--device", "cpu"]
    assert create(["--create-hypernetwork", "mine", *hypernetworks]) == 0
    write_folder(tmp_path / "pictures", 2, seed=4, size=32)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "mine.txt").write_text("[filewords]\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # outside the checkout
    code = train(["--train-hypernetwork", "mine", "--dataset", "pictures", "--template", "templates/mine.txt",
                  "--log-dir", "logs", "--width", "32", "--height", "32", "--steps", "2", "--save-every", "1",
                  "--seed", "1", *hypernetworks])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert sorted(p.name for p in (tmp_path / "logs").rglob("mine-*.safetensors")) == ["mine-1.safetensors",
                                                                             "mine-2.safetensors"], out.out
    refused = secured.post("train/hypernetwork", {"hypernetwork_name": NETWORK, "data_root": str(tmp_path / "pictures"),
                                                  "steps": 1}, auth=API)
    assert refused.status_code == 422 and "outside the folders training may use" in refused.json()["detail"]


def test_confine_dir():
    from extension.confine import OutsideRoots, confine_dir, training_roots

    roots = training_roots(["/tmp/a-root", "/tmp/b-root"])
    assert confine_dir("x/y", roots, "f") == Path("/tmp/a-root/x/y")  # relative: to the first root
    assert confine_dir("/tmp/b-root/z", roots, "f") == Path("/tmp/b-root/z")
    assert confine_dir("", roots, "f") == Path("/tmp/a-root")
    for bad in ["/tmp", "/tmp/a-rootx", "../b-root/../c", "/etc", "x\0y", "~"]:
        with pytest.raises(OutsideRoots):
            confine_dir(bad, roots, "f")
    assert training_roots(None) == (Path(os.path.realpath(Path(__file__).resolve().parent.parent)),)


def test_a_body_that_is_not_utf8_is_a_400(secured):
    """Found by the fuzzer: Starlette's own 400 for such a body came out as a 500."""
    answer = requests.post(f"{secured.api}/create/hypernetwork", data=b"\x8fG", auth=API, timeout=30,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    nul = secured.post("options", {"sd_model_checkpoint": "x\u0000y"}, auth=API)  # was a 500 (embedded null byte)
    assert nul.status_code == 422 and "sd_model_checkpoint" in nul.json()["detail"]


def test_a_browser_sees_the_login_form_then_the_app(secured):
    """The login page works in a browser with only what the gate lets through: every request it makes before the
    login is answered, and after the login the page is the app's."""
    from browser_utils import chromium_browser

    with chromium_browser() as browser:
        page = browser.new_page()
        answers = []
        page.on("response", lambda r: answers.append((r.request.method, r.url[len(secured.url):], r.status)))
        page.goto(secured.url + "/")
        page.get_by_label("username").wait_for(timeout=60000)
        before = list(answers)
        assert before and all(status < 400 for _, _, status in before), before
        assert all(is_public(method, path.split("?")[0]) for method, path, _ in before), before
        page.get_by_label("username").fill(PAGE[0])
        page.get_by_label("password").fill(PAGE[1])
        page.get_by_role("button", name="Login").click()
        page.wait_for_selector("#tab_txt2img", timeout=120000)
        assert page.locator("#setting_sd_model_checkpoint").count() == 1
