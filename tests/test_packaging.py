"""The wheel installs one top-level package, ``exec_watchdog``, and its console script works.

The repository keeps one folder per part (exporter/, remediator/, ...); pyproject.toml's package-dir
table installs them as ``exec_watchdog.<part>`` so nothing generic lands in site-packages. The wheel
is built for real (by the PEP 517 backend pyproject.toml names, as any front end would call it: the
locked environment has no pip) and run from its unpacked files, isolated from this checkout.
"""

from __future__ import annotations

import configparser
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Only the test extra has these: nothing in the wheel may need them.
TEST_ONLY = ("grafana_foundation_sdk", "pytest", "hypothesis", "playwright")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    backend = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["build-backend"]
    subprocess.run([sys.executable, "-c", f"import {backend} as b; b.build_wheel({str(out)!r})"],
                   check=True, capture_output=True, timeout=240, cwd=ROOT)
    [built] = out.glob("exec_watchdog-*.whl")
    unpacked = out / "unpacked"
    with zipfile.ZipFile(built) as archive:
        archive.extractall(unpacked)
    return unpacked


def _run_isolated(site: Path, code: str) -> subprocess.CompletedProcess[str]:
    # -I: neither this checkout (the working directory) nor PYTHON* variables are on the path;
    # the unpacked wheel goes first, the virtualenv's dependencies stay reachable.
    return subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
                          capture_output=True, text=True, timeout=120, cwd=site)


def test_the_wheel_holds_a_single_top_level_package(wheel: Path) -> None:
    names = {path.name for path in wheel.iterdir() if not path.name.endswith(".dist-info")}
    assert names == {"exec_watchdog"}
    [info] = wheel.glob("*.dist-info")
    assert (info / "top_level.txt").read_text().split() == ["exec_watchdog"]
    parts = {path.name for path in (wheel / "exec_watchdog").iterdir() if (path / "__init__.py").is_file()}
    assert {"platform_access", "simulated_platform", "exporter", "alerts", "remediator", "grafana",
            "pipeline"} <= parts


def test_nothing_in_the_wheel_needs_a_test_only_dependency(wheel: Path) -> None:
    needing = [str(path.relative_to(wheel)) for path in wheel.rglob("*.py")
               for name in TEST_ONLY if f"import {name}" in path.read_text() or f"from {name}" in path.read_text()]
    assert not needing, f"modules in the wheel import test-only packages: {needing}"
    assert not (wheel / "exec_watchdog" / "grafana" / "builder").exists()
    assert not (wheel / "exec_watchdog" / "testbed").exists()  # test infrastructure, used from a checkout


def test_the_installed_namespace_imports_and_the_old_names_do_not(wheel: Path) -> None:
    found = _run_isolated(wheel, "import exec_watchdog.exporter.app as m; print(m.__file__)")
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).is_relative_to(wheel)
    for old in ("exporter", "remediator", "alerts", "platform_access", "pipeline", "simulated_platform"):
        result = _run_isolated(wheel, f"import {old}")
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, f"`import {old}` works"


def test_the_console_script_runs_from_the_wheel(wheel: Path) -> None:
    [info] = wheel.glob("*.dist-info")
    entry_points = configparser.ConfigParser()
    entry_points.read(info / "entry_points.txt")
    module, function = entry_points["console_scripts"]["exec-watchdog"].split(":")
    result = _run_isolated(wheel, f"from {module} import {function} as main; sys.exit(main(['--help']))")
    assert result.returncode == 0, result.stderr
    assert "usage: exec-watchdog" in result.stdout and "remediator" in result.stdout


def test_every_module_in_the_wheel_imports_from_the_wheel_alone(wheel: Path) -> None:
    # An import still spelled the old way (`from remediator.x import y`) works in a checkout, where
    # the folder is on the path, and fails only here.
    modules = sorted(".".join(path.relative_to(wheel).with_suffix("").parts).removesuffix(".__init__")
                     for path in (wheel / "exec_watchdog").rglob("*.py") if path.name != "__main__.py")
    assert "exec_watchdog.remediator.remediate" in modules
    result = _run_isolated(wheel, "import importlib\n"
                                  f"for name in {modules!r}:\n"
                                  "    assert importlib.import_module(name).__file__.startswith(sys.path[0]), name")
    assert result.returncode == 0, result.stderr
