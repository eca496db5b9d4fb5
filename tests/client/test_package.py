"""client/ is a package people install: `pip install ./client` gives the `messy_client` module,
its version, its type information and the `messy` command, with no dependency."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from client import messy_client
from tests.harness import ROOT, VENV_BIN

CLIENT = ROOT / "client"


def run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_pip_installs_the_client_with_its_command_into_a_fresh_environment(tmp_path):
    source = tmp_path / "client"

    def ignored(folder: str, names: list[str]) -> set[str]:
        # client/__init__.py only lets this repository's tests import client.messy_client.
        return {n for n in names if n in ("__pycache__", "build") or n.endswith(".egg-info")} | (
            {"__init__.py"} if Path(folder) == CLIENT else set()
        )

    shutil.copytree(CLIENT, source, ignore=ignored)
    # Built with this environment's setuptools (no index here), installed from the wheel alone.
    run(VENV_BIN / "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist", source)
    (wheel,) = (tmp_path / "dist").glob("messy_client-*.whl")
    run(sys.executable, "-m", "venv", "--without-pip", tmp_path / "env")
    run(VENV_BIN / "pip", "install", "-q", "--no-deps", "--no-index", "--target", tmp_path / "site", wheel)
    installed = {path.name for path in (tmp_path / "site").iterdir()}
    assert "messy_client" in installed
    assert (tmp_path / "site" / "messy_client" / "py.typed").exists()
    assert (tmp_path / "site" / "bin" / "messy").exists()
    env_python = tmp_path / "env" / "bin" / "python"
    version = run(env_python, "-c", "import messy_client; print(messy_client.__version__)", cwd=tmp_path / "site")
    assert version.strip() == messy_client.__version__
    help_text = run(env_python, "-m", "messy_client", "--help", cwd=tmp_path / "site")
    for command in ("write", "batch", "import", "job"):
        assert command in help_text
    assert wheel.name.startswith(f"messy_client-{messy_client.__version__}-")


def test_the_package_declares_no_dependency_and_a_python_it_runs_on():
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == []
    assert project["scripts"] == {"messy": "messy_client.cli:main"}
    assert project["requires-python"] == ">=3.10"
