"""Benchmark start-up time: ``import unet`` and ``unet --help``, lazy package names versus eager.

The package ``__init__`` files of ``unet``, ``unet.data`` and ``unet.inference``
load their names lazily (``lazy_loader``).  This script measures what that buys:
each case runs in a fresh interpreter, median wall time of ``--repeats`` runs.
The *eager* cases import every name those three packages list (as plain
``from ... import ...`` lines would) before doing the same thing.

Usage::

    python scripts/bench_startup.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

EAGER = ("import unet, unet.data, unet.inference\n"
         "for m in (unet, unet.data, unet.inference):\n"
         "    [getattr(m, n) for n in m.__all__]\n")
HELP = "from unet.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"

CASES = {
    "import unet (lazy)": "import unet",
    "import unet (eager)": EAGER,
    "unet --help (lazy)": HELP,
    "unet --help (eager)": EAGER + HELP,
    "python (nothing)": "pass",
}


def wall(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    for code in CASES.values():  # warm the file cache and the byte-code
        wall(code)
    print("| case | median s | min s |")
    print("|---|---|---|")
    for name, code in CASES.items():
        times = [wall(code) for _ in range(args.repeats)]
        print(f"| {name} | {statistics.median(times):.2f} | {min(times):.2f} |")


if __name__ == "__main__":
    main()
