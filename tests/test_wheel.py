"""The wheel is a library people can build on: built with `python -m build`, installed into a fresh
virtual environment with its core dependencies only (no book, test or compare extras), it runs
tests/user_script.py (a user's own model and tasks, checkpoints, resume, evaluation) from a folder
outside the repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.tags import sys_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

pytestmark = [pytest.mark.slow, pytest.mark.wheel]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "user_script.py"
# Installed by the extras or by the development setup, never by the core dependencies.
NOT_CORE = {"pytest", "hypothesis", "jupyter-book", "sphinx", "ruff", "higher", "torchopt", "torchvision", "scipy"}


def run(command: list[str | Path], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    shown = " ".join(map(str, command))
    assert result.returncode == 0, f"{shown} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


def declared(name: str) -> Requirement:
    """The core dependency `name` as pyproject.toml declares it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    return next(r for r in requirements if canonicalize_name(r.name) == name)


def pip_find_links() -> list[Path]:
    """The local folders pip is configured to take wheels from (PIP_FIND_LINKS, pip's config files)."""
    values = os.environ.get("PIP_FIND_LINKS", "").split()
    config = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    for line in config.splitlines():  # global.find-links='/some/folder'
        if ".find-links=" in line:
            values += line.split("=", 1)[1].strip("'\"").split()
    folders = [Path(v.removeprefix("file://")) for v in values]
    return [f for f in dict.fromkeys(folders) if f.is_dir()]


def cpu_torch() -> str | None:
    """A CPU-only torch release in the declared range whose wheel pip finds on this machine, if any.

    Installing it instead of the default (CUDA) build keeps the fresh environment at ~1 GB instead of
    ~5.5 GB and tests a second torch release of the range; pip still resolves every other core
    dependency, and refuses if the release is outside the declared range.
    """
    wanted, tags = declared("torch"), set(sys_tags())
    for folder in pip_find_links():
        for wheel in sorted(folder.glob("torch-*+cpu-*.whl"), reverse=True):
            _, version, _, wheel_tags = parse_wheel_filename(wheel.name)
            if wanted.specifier.contains(version, prereleases=False) and wheel_tags & tags:
                return str(version)
    return None


def test_the_wheel_runs_a_users_script_in_a_fresh_environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env = {k: v for k, v in env.items() if not k.startswith("MAMLBOOK_")}
    times = {}

    started = time.perf_counter()
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--outdir", dist, ROOT], timeout=600, env=env)
    (wheel,) = dist.glob("mamlbook-*.whl")
    times["build sdist + wheel"] = time.perf_counter() - started

    venv = tmp_path / "venv"
    try:
        started = time.perf_counter()
        run([sys.executable, "-m", "venv", venv], timeout=300, env=env)
        python = venv / "bin" / "python"
        install = [python, "-m", "pip", "install", "--no-compile", wheel]
        torch_version = cpu_torch()
        if torch_version is not None:
            constraints = tmp_path / "constraints.txt"
            constraints.write_text(f"torch=={torch_version}\n")
            install += ["-c", constraints]
        run(install, timeout=1200, env=env)
        times["fresh venv + install"] = time.perf_counter() - started

        listed = run([python, "-m", "pip", "list", "--format=json"], timeout=120, env=env).stdout
        installed = {canonicalize_name(p["name"]): p["version"] for p in json.loads(listed)}
        assert not NOT_CORE & set(installed), f"an extra was installed: {sorted(NOT_CORE & set(installed))}"
        if torch_version is not None:
            assert installed["torch"] == torch_version

        # A user's folder, outside the repository: the script must find mamlbook in the environment.
        user = tmp_path / "user"
        user.mkdir()
        shutil.copy(SCRIPT, user / "user_script.py")
        started = time.perf_counter()
        where = (
            "import mamlbook, runpy; print(mamlbook.__file__); runpy.run_path('user_script.py', run_name='__main__')"
        )
        out = run([python, "-c", where, user / "run"], timeout=600, cwd=user, env=env).stdout
        times["user script"] = time.perf_counter() - started
        # The wheel's command works with the core dependencies too.
        usage = run([venv / "bin" / "mamlbook", "--help"], timeout=300, cwd=user, env=env).stdout
        assert "train" in usage and "eval" in usage, usage
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # ~1 GB, more with a CUDA torch

    location, summary = out.strip().splitlines()[0], out.strip().splitlines()[-1]
    assert Path(location).is_relative_to(venv), f"mamlbook was imported from {location}, not the fresh environment"
    assert re.match(r"mamlbook \S+ \(torch \S+\): trained 40 iterations, resumed at 40 to 80;", summary), summary
    assert (user / "run" / "checkpoint.pt").exists() and (user / "run" / "learning_curve.png").exists()
    print(summary)
    print("; ".join(f"{step} {seconds:.0f} s" for step, seconds in times.items()))
