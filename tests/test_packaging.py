"""zeroft installs like a library: a wheel with only the zeroft package (and the embedded model), a
console script that generates from outside the checkout, and requirements.txt in step with pyproject.toml."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def requirements_file(path: Path) -> set[str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return {str(Requirement(line)) for line in lines if line}


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_requirements_files_list_what_pyproject_lists(pyproject):
    extras = pyproject["optional-dependencies"]
    library = {str(Requirement(r)) for r in pyproject["dependencies"]}
    served = library | {str(Requirement(r)) for name in ("app", "train", "eval", "gpu") for r in extras[name]}
    assert requirements_file(ROOT / "requirements.txt") == served
    assert requirements_file(ROOT / "requirements-dev.txt") == {str(Requirement(r)) for r in extras["dev"]}


def test_constraints_pin_every_requirement():
    pinned = {Requirement(line).name.lower().replace("_", "-")
              for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")}
    wanted = {Requirement(r).name.lower().replace("_", "-")
              for r in requirements_file(ROOT / "requirements.txt") | requirements_file(ROOT / "requirements-dev.txt")
              if Requirement(r).marker is None or Requirement(r).marker.evaluate()}
    assert wanted <= pinned, f"not pinned in constraints.txt: {sorted(wanted - pinned)}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy of what the wheel needs, so setuptools' build/ and egg-info stay out of the checkout.
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "zeroft", source / "zeroft", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "assets" / "zeroft-toy", source / "assets" / "zeroft-toy")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(out), str(source)], check=True, capture_output=True, cwd=out)
    (built,) = out.glob("zeroft-*.whl")
    return built


def test_wheel_holds_only_the_library_and_the_embedded_checkpoint(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"zeroft"}  # no train/, toyworld/, bench/, app
    assert "zeroft/embedded/zeroft_config.json" in names and "zeroft/embedded/unet/config.json" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "zeroft = zeroft.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_generates_from_outside_the_checkout(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # The dependencies (and pip) come from the suite's own environment; zeroft itself only from the wheel.
    Path(site, "suite-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True, env=env, cwd=tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    photo = ROOT / "assets" / "examples" / "object-01.png"
    done = subprocess.run([str(env_dir / "bin" / "zeroft"), "generate", "--image", str(photo), "--prompt",
                           "two objects on a white background", "--steps", "2", "--seed", "0", "--device", "cpu",
                           "--out", "out"], capture_output=True, text=True, env=env, cwd=work, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    settings = json.loads((work / "out" / "zeroft_001.json").read_text())
    assert Path(settings["checkpoint"]).is_relative_to(site)  # the checkpoint shipped inside the package
    assert (work / "out" / settings["outputs"][0]).is_file()
    where = subprocess.run([str(python), "-c", "import zeroft, importlib.util; print(zeroft.__file__); "
                            "print(importlib.util.find_spec('train'))"], capture_output=True, text=True, env=env, cwd=work)
    module_file, train_spec = where.stdout.split()
    assert Path(module_file).is_relative_to(site) and train_spec == "None"
