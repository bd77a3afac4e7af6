"""The package as users install it: declared dependencies, a wheel (not an editable install)
with its configs, manifests and sample inside, and the ``unet`` console script."""

import ast
import os
import re
import subprocess
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path

import pytest

import unet

tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml")
REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
#: import name -> distribution name, where they differ
DISTRIBUTION = {"skimage": "scikit-image", "yaml": "pyyaml"}
#: needed at run time although unet/ never imports them (reason beside each in pyproject.toml)
NOT_IMPORTED = {"imagecodecs", "tensorboard"}


def _requirement_name(req: str) -> str:
    return re.split(r"[\[<>=!~;\s]", req, maxsplit=1)[0].lower()


def _third_party_imports() -> set[str]:
    found = set()
    for path in (REPO / "unet").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {DISTRIBUTION.get(n, n) for n in found if n not in sys.stdlib_module_names and n not in ("unet", "__future__")}


def test_runtime_dependencies_are_exactly_what_the_package_imports():
    declared = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    imported = _third_party_imports()
    extras = PYPROJECT["project"]["optional-dependencies"]
    # unet export / --backend onnxruntime import these only when asked for, saying what to install
    optional = {_requirement_name(r).split(".")[0] for r in extras["export"]}
    imported_optional = imported & (optional - declared)
    imported -= imported_optional
    assert imported_optional == {"onnx", "onnxruntime", "bioimageio"}
    assert imported <= declared, f"imported but not declared: {imported - declared}"
    assert declared - imported == NOT_IMPORTED, f"declared but never imported: {declared - imported - NOT_IMPORTED}"
    # only the test and benchmark code use these; elasticdeform needs a source build under NumPy 2
    assert not {"safetensors", "elasticdeform", "albumentations", "distributed"} & declared
    assert "elasticdeform" in {_requirement_name(r) for r in extras["test"]} & {_requirement_name(r) for r in extras["bench"]}


def test_version_has_one_source():
    assert PYPROJECT["project"]["dynamic"] == ["version"] and "version" not in PYPROJECT["project"]
    assert version("unet") == unet.__version__


def _console_script() -> Path:
    return Path(sysconfig.get_path("scripts")) / "unet"


def test_installed_console_script(tmp_path):
    script = _console_script()
    assert script.is_file(), f"{script}: the `unet` entry point is not installed"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"unet {version('unet')}"
    out = subprocess.run([str(script), "info", "--model", "unet"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "31,030,658" in out.stdout  # paper's network: 23 convolutions, 31.0 M parameters
    # bad input through the entry point: one line, exit 2
    out = subprocess.run([str(script), "evaluate", str(tmp_path / "missing"), str(tmp_path / "none")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "missing" in out.stderr


@pytest.mark.slow
def test_wheel_installs_and_runs_the_demo_from_another_folder(tmp_path):
    """``pip install .`` (a wheel, not editable): configs, manifests and the demo sample come with it."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", str(REPO), "-w", str(wheels)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("unet-*.whl")
    # a fresh environment that sees the test environment's packages (torch, ...) but not its unet
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-deps",
                    "--no-index", "--force-reinstall", str(wheel)], check=True, capture_output=True, timeout=300)
    # only then (pip would take the test environment's unet for this one) its other packages
    (site / "test_env.pth").write_text(sysconfig.get_path("purelib") + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    cli = venv / "bin" / "unet"

    def run(*args):
        out = subprocess.run([str(cli), *args], capture_output=True, text=True, cwd=elsewhere, env=env, timeout=600)
        assert out.returncode == 0, out.stderr
        return out.stdout

    where = subprocess.run([str(py), "-c", "import unet; print(unet.__file__)"], capture_output=True, text=True,
                           cwd=elsewhere, env=env)
    assert where.returncode == 0, where.stderr
    where = where.stdout.strip()
    assert Path(where).is_relative_to(site), where  # the wheel's copy, not the repository
    assert run("--version").strip() == f"unet {unet.__version__}"
    assert {"isbi2012", "dic-hela", "phc-u373"} <= set(run("reproduce", "--list").split())
    sample = site / "unet" / "sample_data" / "isbi2012"
    run("data", "show", "isbi2012", str(sample), "--pair", "train/3", "--out", "show.png")
    assert (elsewhere / "show.png").stat().st_size > 0
    run("demo", "--out", "demo", "--steps", "2", "--quiet")
    assert (elsewhere / "demo" / "metrics.json").is_file() and (elsewhere / "demo" / "last.pt").is_file()
