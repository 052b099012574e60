"""The package as a user gets it: a wheel built from this tree, installed into a fresh virtual environment (its
dependencies from the package index, as pip resolves them for a user), then run."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from opt_mcp import __version__
from tests.helpers import clean_env

ROOT = Path(__file__).parent.parent


@pytest.mark.network
@pytest.mark.slow
def test_the_wheel_installs_and_runs_in_a_fresh_environment(tmp_path: Path) -> None:
    def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=clean_env(), timeout=300)
        assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        return done

    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", tmp_path / "dist", ROOT)
    (wheel,) = (tmp_path / "dist").glob("opt_mcp-*.whl")
    assert wheel.name == f"opt_mcp-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert (
        "opt_mcp/py.typed" in names
        and "opt_mcp/output_schemas.json" in names
        and not any(name.startswith("tests/") for name in names)
    )

    venv.create(tmp_path / "fresh", with_pip=True)
    bin_dir = tmp_path / "fresh" / ("Scripts" if sys.platform == "win32" else "bin")
    run(bin_dir / "python", "-m", "pip", "install", "--quiet", wheel)
    assert run(bin_dir / "opt-mcp", "--version").stdout.strip() == f"opt-mcp {__version__}"
    assert run(bin_dir / "python", "-m", "opt_mcp", "--version").stdout.strip() == f"opt-mcp {__version__}"
    listed = json.loads(run(bin_dir / "opt-mcp", "call", "list_flags", "{}").stdout)
    assert listed["project_id"] == "5629661695180800"
    assert listed["returned"] == listed["total_count"] == 3
