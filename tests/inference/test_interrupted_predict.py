"""``unet predict`` killed or stopped: no partial output stays beside the target (SIGTERM cleans up at
once; what SIGKILL leaves is removed, with one line, by the next run writing the same target)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile

import unet
from unet.cli import main

from inference_helpers import tiny_unet


@pytest.fixture()
def job(tmp_path):
    ckpt = unet.save_checkpoint(tiny_unet(depth=2), tmp_path / "m.pt")
    image = tmp_path / "big.tif"
    # large enough, with small tiles, that prediction runs for many seconds
    tifffile.imwrite(image, np.random.default_rng(0).integers(0, 255, (1536, 1536), dtype=np.uint8))
    return ckpt, image, tmp_path / "out" / "big_prob.tif"


def start(ckpt, image, target):
    return subprocess.Popen([sys.executable, "-m", "unet", "predict", str(image), "-c", str(ckpt), "-o", str(target),
                             "--tile-size", "16", "--device", "cpu", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def parts(target):
    return sorted(target.parent.glob(f".{target.name}.*part*")) if target.parent.exists() else []


def wait_for_part(proc, target, timeout=120):
    t0 = time.monotonic()
    while not parts(target):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "no partial file appeared"
        time.sleep(0.05)
    time.sleep(0.5)  # well inside the prediction


def test_sigterm_removes_the_partial_output(job):
    ckpt, image, target = job
    proc = start(ckpt, image, target)
    try:
        wait_for_part(proc, target)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "unet predict: terminated" in err and "Traceback" not in err
    assert parts(target) == [] and not target.exists()


def test_partial_output_left_by_sigkill_is_removed_by_the_next_run(job, capsys):
    ckpt, image, target = job
    proc = start(ckpt, image, target)
    try:
        wait_for_part(proc, target)
        proc.kill()  # SIGKILL: nothing can clean up
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    left = parts(target)
    assert len(left) == 1  # the debris this item is about
    # a partial file of an older unet (no process id in the name) and one of a writer still running
    old = target.parent / f".{target.name}.k2j3h4x9.part.tif"
    old.write_bytes(b"half a tiff")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        live = target.parent / f".{target.name}.{sleeper.pid}-abcd1234.part.tif"
        live.write_bytes(b"being written")
        small = target.parent / "small.tif"
        tifffile.imwrite(small, np.zeros((20, 20), np.uint8) + np.arange(20, dtype=np.uint8))
        assert main(["predict", str(small), "-c", str(ckpt), "-o", str(target), "--tile-size", "16", "-q"]) == 0
        assert parts(target) == [live]  # another process's file is not touched
    finally:
        sleeper.kill()
        sleeper.wait()
    err = capsys.readouterr().err.splitlines()
    removed = [line for line in err if "removed a partial output left by an interrupted run" in line]
    assert sorted(removed) == sorted(f"unet predict: warning: {p}: removed a partial output left by an "
                                     "interrupted run" for p in left + [old])
    assert target.exists()
