"""``launch.py`` itself: the flags reach the right mode in the project's environment, ``--help`` lists every
mode, output reads well in a terminal and in a log, and the process id you start is the server."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
from PIL import Image

from conftest import ROOT
from extension import cli


def launch(*args: str, cwd=ROOT, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "VENV_DIR": sys.prefix, "SKIP_INSTALL": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)


def test_generate_from_the_command_line_writes_pngs_with_infotext(tmp_path):
    result = launch("--generate", "a red circle on a blue background <hypernet:demo:1>", "--steps", "3",
                    "--seed", "7", "--batch-size", "2", "--outdir", str(tmp_path),
                    "--negative", " ".join(["blurry"] * 80), "--pad-cond-uncond")  # a two-chunk negative, padded
    assert result.returncode == 0, result.stderr[-3000:]
    paths = [line for line in result.stdout.splitlines() if line.endswith(".png")]
    assert len(paths) == 2
    for path in paths:
        info = Image.open(path).text["parameters"]
        assert "<hypernet:demo:1>" in info and "Hypernet hashes:" in info and "Steps: 3" in info
        assert "Pad conds: True" in info
    # stderr is a pipe here: one plain line per step, no carriage returns (no progress bars, no loading bars)
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("step ")] == ["step 1/3", "step 2/3", "step 3/3"]
    assert "\r" not in result.stderr
    # transformers' "`CLIPImageProcessor` requires torchvision (not installed); falling back to ..." (twice)
    assert "torchvision" not in result.stderr and "ImageProcessor" not in result.stderr, result.stderr


@pytest.mark.skipif(os.name != "posix", reason="pseudo-terminals are POSIX")
def test_generate_in_a_terminal_shows_a_progress_bar_with_eta(tmp_path):
    import pty

    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 rows, 120 columns
    env = {**os.environ, "VENV_DIR": sys.prefix, "SKIP_INSTALL": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "--generate", "a red circle", "--steps", "4",
                                "--seed", "1", "--outdir", str(tmp_path)], cwd=ROOT, env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []

    def read_terminal():  # keeps the pseudo-terminal drained until the child has closed it
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        stdout, _ = process.communicate(timeout=600)
    finally:
        reader.join(timeout=60)
        os.close(master)
    terminal = b"".join(chunks).decode("utf-8", "replace")
    assert process.returncode == 0, terminal[-3000:]
    assert stdout.decode().strip().endswith(".png")
    bar = [part for part in re.split(r"[\r\n]", terminal) if part.startswith("txt2img")]
    assert bar and "4/4" in bar[-1], terminal[-3000:]
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", bar[-1]), bar[-1]  # elapsed<ETA, tqdm's way
    assert not re.search(r"^step \d+/\d+", terminal, re.M)  # no plain lines in a terminal
    assert "torchvision" not in terminal


def test_help_lists_every_mode_and_its_flags():
    result = launch("--help", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "--skip-install" in result.stdout
    for mode in [cli.SERVER, *cli.MODES]:
        assert mode.usage in result.stdout
        flags = [flag for action in mode.parser()._actions for flag in action.option_strings]
        assert flags or mode.flag == "--test"
        for flag in flags:
            assert re.search(rf"(^|[\s\[,]){re.escape(flag)}\b", result.stdout), (mode.flag, flag)
    assert "--test [PYTEST ARGS]" in result.stdout and "--train-demo-model OUTDIR" in result.stdout


def test_a_mode_help_shows_that_mode():
    result = launch("--generate", "--help")
    assert result.returncode == 0, result.stderr
    assert "--cfg-scale" in result.stdout and "--port" not in result.stdout


def test_unknown_flags_are_clear_errors(tmp_path):
    result = launch("--generate", "x", "--steps", "many", "--outdir", str(tmp_path))
    assert result.returncode == 2 and "argument --steps: invalid int value: 'many'" in result.stderr
    result = launch("--bogus")
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr
    assert "launch.py --help" in result.stderr
    result = launch("--generat", "a cat")
    assert result.returncode == 2 and "did you mean --generate?" in result.stderr
    result = launch("--generate", "a cat", "--train-demo-model", str(tmp_path))
    assert result.returncode != 0 and "separate modes" in result.stderr


SKIPPING_TEST = '''
import pytest


@pytest.mark.skip(reason="a reason the summary must show")
def test_skipped():
    pass
'''


def test_test_mode_says_what_was_skipped_and_why(tmp_path):
    path = tmp_path / "test_skipping.py"
    path.write_text(SKIPPING_TEST)
    result = launch("--test", str(path), "-q", "-p", "no:cacheprovider", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"SKIPPED \[1\] .*a reason the summary must show", result.stdout), result.stdout
    assert re.search(r"^1 skipped in ", result.stdout, re.M), result.stdout  # that file alone, not tests/
    own = launch("--test", str(path), "-q", "-p", "no:cacheprovider", "-rN", cwd=tmp_path)
    assert own.returncode == 0 and "1 skipped" in own.stdout
    assert "a reason the summary must show" not in own.stdout  # the user's -r wins


@pytest.mark.parametrize("args, chosen", [
    (["-q"], False), (["-rs"], True), (["-r", "a"], True), (["-qra"], True), (["--report-chars=s"], True),
    (["-p", "no:cacheprovider"], False), (["-k", "report"], False),
])
def test_report_option_detection(args, chosen):
    assert cli.has_report_option(args) is chosen


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.skipif(os.name != "posix", reason="POSIX: launch.py replaces itself with the environment's Python")
@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="the tests are not running in a virtual environment")
def test_the_pid_started_is_the_server_so_kill_stops_it(tmp_path):
    import psutil

    port = free_port()
    env = {**os.environ, "VENV_DIR": sys.prefix, "SKIP_INSTALL": "1", "SD_WEBUI_DEMO_RANDOM": "1",
           "HF_HUB_OFFLINE": "1"}
    plain_python = sys._base_executable  # the interpreter the environment was made from: not in the venv
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen([plain_python, str(ROOT / "launch.py"), "--port", str(port), "--skip-install",
                                "--outdir", str(tmp_path / "out")], cwd=tmp_path, env=env,
                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):  # polls until the server answers, up to ~10 minutes on a busy machine
            if answers(port):
                break
            assert process.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        else:
            pytest.fail("the server never answered:\n" + (tmp_path / "server.log").read_text()[-3000:])
        server = psutil.Process(process.pid)
        assert server.cmdline()[:2] == [os.path.join(sys.prefix, "bin", "python"), str(ROOT / "launch.py")]
        descendants = server.children(recursive=True)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        assert not answers(port)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, "something still listens on the port"
        survivors = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert survivors == [], survivors
        orphans = [p.info for p in psutil.process_iter(["pid", "cmdline"])  # a child re-parented elsewhere
                   if str(ROOT / "launch.py") in (p.info["cmdline"] or []) and str(port) in p.info["cmdline"]]
        assert orphans == [], orphans
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
