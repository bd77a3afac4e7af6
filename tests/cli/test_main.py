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
