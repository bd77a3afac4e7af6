import subprocess
import sys

import pytest

import unet
from unet.cli import main


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"unet {unet.__version__}"
    assert main([]) == 2  # no subcommand: help, non-zero
    assert "train" in capsys.readouterr().out


def test_console_script_installed():
    # the `unet` entry point resolves to unet.cli:main
    out = subprocess.run([sys.executable, "-m", "unet", "info", "--model", "unet"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "31,030,658" in out.stdout and "572 -> 388" in out.stdout


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["info", "--model", "resnet"]) == 2
    assert "unknown model 'resnet'" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["-1", "0"])
def test_info_refuses_a_non_positive_input_size(capsys, size):
    assert main(["info", "--input-size", size]) == 2
    err = capsys.readouterr().err.strip()
    assert "--input-size must be a positive number" in err and "\n" not in err


def test_help_and_import_load_no_heavy_library():
    """`unet --help` and `import unet` stay fast: the CLI modules import torch & co. only when a command runs."""
    heavy = ("torch", "scipy", "skimage", "dask", "numba", "matplotlib", "numpy")
    code = ("import sys\nimport unet, unet.reproduce, unet.data, unet.inference\nfrom unet.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
