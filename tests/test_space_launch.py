"""The app started the way Hugging Face Spaces start it: ``python app.py`` in the checkout, with Spaces' environment.

Spaces set GRADIO_SERVER_NAME=0.0.0.0 and GRADIO_SERVER_PORT and route visitors to that address; an app that binds
loopback only never answers. Each test starts app.py as a subprocess, reads where it listens from the kernel's
socket table (/proc/net/tcp), then talks to it on the loopback address only.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOISE = ("gemm_4bit_forward", "Enum subclass", "Unable to import `torchao`")  # other libraries' import-time lines
STAND_IN_SPACES = '''"""A stand-in for the spaces package on a ZeroGPU Space: @spaces.GPU runs the function here, and
gradio's automatic wrapping of every event handler on Spaces (spaces.gradio_auto_wrap) leaves it as it is."""
def GPU(function=None, *, duration=None, **kwargs):
    if function is None:
        return lambda f: f
    return function


def gradio_auto_wrap(task):
    return task
'''
STAND_IN_RELOADING = '''"""Spaces' dev-mode reload server, which gradio starts on every Space: here it only waits to be stopped."""
def start_reload_server(prerun, postrun, stop_event, port=7887):
    stop_event.wait()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket in LISTEN state on ``port``, from /proc/net/tcp (and IPv6 ones as "::" forms)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not Path(table).is_file():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:  # 0A: TCP_LISTEN
                continue
            if width == 8:
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
            else:
                words = [bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, 32, 8)]
                found.add(socket.inet_ntop(socket.AF_INET6, b"".join(words)))
    return found


def test_the_socket_table_reader_sees_a_known_listener():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert listening_addresses(s.getsockname()[1]) == {"127.0.0.1"}


class Started:
    """app.py running in a subprocess; ``stop`` ends it as Spaces or a person at a terminal would, and returns its log."""

    def __init__(self, env: dict, port: int, log: Path):
        self.port, self.log = port, log
        # SIGINT as a terminal gives it: a shell that starts a job in the background without job control (a CI
        # runner's `cmd &`) leaves SIGINT ignored in it and in its children, and Ctrl-C would then be a no-op here
        self.process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log.open("w"),
                                        stderr=subprocess.STDOUT,
                                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.killed = False

    def wait_listening(self, timeout: float = 180) -> set[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"app.py exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            found = listening_addresses(self.port)
            if found:
                return found
            time.sleep(0.5)
        pytest.fail(f"app.py did not listen on port {self.port} within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig=signal.SIGTERM) -> str:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                self.killed = True
        return self.log.read_text()


def _environment(tmp_path: Path, port: int, spaces: bool, zerogpu: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIO_SERVER", "SPACE", "ZEROFT_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", GRADIO_ANALYTICS_ENABLED="False",
               PYTHONUNBUFFERED="1")
    if spaces:
        env.update(GRADIO_SERVER_NAME="0.0.0.0", GRADIO_SERVER_PORT=str(port), SPACE_ID="someone/zeroft",
                   SPACE_AUTHOR_NAME="someone", SPACE_REPO_NAME="zeroft", SYSTEM="spaces")
    else:
        env["GRADIO_SERVER_PORT"] = str(port)  # where a local run would pass --port; the address is left alone
    if zerogpu:
        (tmp_path / "stand-in" / "spaces" / "reloading").mkdir(parents=True)
        (tmp_path / "stand-in" / "spaces" / "__init__.py").write_text(STAND_IN_SPACES)
        (tmp_path / "stand-in" / "spaces" / "reloading" / "__init__.py").write_text(STAND_IN_RELOADING)
        env["PYTHONPATH"] = str(tmp_path / "stand-in")
        env["SPACES_ZERO_GPU"] = "true"
    return env


def _generate_once(port: int) -> tuple[list, dict]:
    import httpx
    from gradio_client import Client, handle_file

    assert httpx.get(f"http://127.0.0.1:{port}/config", timeout=30).status_code == 200
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    gallery, settings, _ = client.predict(
        {"background": handle_file(str(ROOT / "assets/examples/object-01.png")), "layers": [], "composite": None},
        "two objects on a white background", "", 5.0, 3.0, 4, 1, 0, False, 64, "none", "zeroft-toy",
        api_name="/generate")
    return gallery, settings


@pytest.mark.parametrize("zerogpu", [False, True], ids=["cpu-space", "zerogpu-stand-in"])
def test_python_app_py_with_spaces_environment_listens_on_all_addresses_and_answers(tmp_path, zerogpu):
    port = _free_port()
    app = Started(_environment(tmp_path, port, spaces=True, zerogpu=zerogpu), port, tmp_path / "app.log")
    try:
        assert app.wait_listening() == {"0.0.0.0"}
        gallery, settings = _generate_once(port)
        assert len(gallery) == 1 and settings["checkpoint"] == "zeroft-toy" and settings["steps"] == 4
        if zerogpu:  # the model was loaded at start-up, as ZeroGPU needs, in ZeroGPU's dtype
            assert settings["dtype"] == "bfloat16"
    finally:
        log = app.stop()
    assert "Traceback" not in log and "Invalid file descriptor" not in log, log[-3000:]
    assert not [line for line in log.splitlines() if any(noise in line for noise in NOISE)], log[-3000:]


def test_python_app_py_run_locally_listens_on_loopback_only(tmp_path):
    port = _free_port()
    app = Started(_environment(tmp_path, port, spaces=False), port, tmp_path / "app.log")
    try:
        assert app.wait_listening() == {"127.0.0.1"}
    finally:
        log = app.stop(signal.SIGINT)  # Ctrl-C at a terminal
    assert not app.killed, "Ctrl-C did not stop the app within 30 s"
    assert "Traceback" not in log and "Invalid file descriptor" not in log, log[-3000:]


@pytest.mark.parametrize("command", [["app.py", "--help"], ["-m", "zeroft", "generate", "--help"]])
def test_help_prints_only_help(command):
    """Other libraries' import-time messages (bitsandbytes, torch, diffusers) stay out of a user's terminal."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    result = subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage:"), result.stderr
    assert result.stderr == "", result.stderr


def test_a_checkpoint_the_app_could_never_load_is_one_line_at_start(tmp_path, capsys):
    from webapp.launch import build

    for bogus, reason in (("bogus", "neither a checkpoint folder"), (str(tmp_path / "missing"), "does not exist"),
                          (str(tmp_path), "not a zeroft checkpoint")):
        with pytest.raises(SystemExit) as stopped:
            build(["--checkpoint", bogus])
        err = capsys.readouterr().err.strip()
        assert stopped.value.code == 2 and len(err.splitlines()) == 1 and reason in err, err


def test_the_code_runs_on_the_python_the_space_declares():
    """README's front matter declares the Python ZeroGPU runs (3.10.13) while this machine has 3.11: vermin reads
    the code the Space runs (app.py, webapp/, zeroft/) and finds nothing newer than the declared minor version."""
    import yaml

    declared = yaml.safe_load((ROOT / "README.md").read_text().split("---\n")[1])["python_version"]
    minor = ".".join(str(declared).split(".")[:2])
    vermin = Path(sys.executable).parent / "vermin"
    result = subprocess.run([str(vermin), "-q", f"-t={minor}-", "--violations", "--no-tips", "--eval-annotations",
                             "app.py", "webapp", "zeroft"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_requirements_let_zerogpu_pick_a_torch_it_supports():
    """Spaces install requirements.txt; ZeroGPU documents torch 2.1.0 to the latest release except 2.3.x (a PyTorch
    bug), listing 2.4.0, 2.5.1, 2.6.0, 2.7.1 and 2.8.0 (huggingface/hub-docs, spaces-zerogpu.md). requirements.txt
    must admit those and no 2.3 release, and pin nothing."""
    from packaging.requirements import Requirement

    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    torch_req = next(Requirement(line) for line in lines if line and Requirement(line).name == "torch")
    assert all(torch_req.specifier.contains(v) for v in ("2.4.0", "2.5.1", "2.6.0", "2.7.1", "2.8.0", "2.14.1"))
    assert not any(torch_req.specifier.contains(v) for v in ("2.3.0", "2.3.1")) and "==" not in str(torch_req.specifier)
