#!/usr/bin/env python
"""Benchmark of the prediction backends: PyTorch vs ONNX Runtime on this CPU, side by side in one run.

For each network (random He initialisation, seed 0; ``paper``: 64 channels, depth 4;
``w16``: 16 channels, depth 4, the width of the committed checkpoints) and each
backend (``torch``: the model; ``onnxruntime``: the same weights exported with
:func:`unet.export.onnx_bytes`, as ``unet predict --backend onnxruntime`` runs them):

* ``tile572`` - one forward pass of a 572 x 572 tile (the paper's tile, Fig. 1):
  median of ``--repeats`` timed passes after one warm-up;
* ``img2048`` - :func:`unet.predict_tiled` of a 2048 x 2048 synthetic image with
  the same output tile size for both backends (chosen from the default memory
  budget for the torch model), so both run exactly the same tiles.

Each row also gives the max |difference| of the probabilities to the torch
backend and the 1-minute load average before and after it (the machine may be
shared: compare rows of one run only).  Both backends use every core.

Usage::

    python scripts/bench_backends.py                       # everything
    python scripts/bench_backends.py --skip paper:img2048  # leave out a row (slow on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

NETS = {"paper": dict(base_channels=64, depth=4), "w16": dict(base_channels=16, depth=4)}
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", action="append", default=[], help="NET:CASE rows to leave out, e.g. paper:img2048")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)

    import numpy as np
    import onnxruntime as ort
    import torch

    import unet
    from bench_inference import synthetic
    from unet.data.normalize import normalize
    from unet.export import export_metadata, onnx_bytes
    from unet.export.network import probability_net
    from unet.export.runtime import ExportedModel, onnxruntime_session
    from unet.inference import predict_tiled
    from unet.inference.tiling import choose_tile_size

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    print(f"# {platform.processor() or platform.machine()}, {threads} cores, torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}, load {os.getloadavg()}", flush=True)
    rows = []
    image = normalize(synthetic(2048))
    for net_name, kw in NETS.items():
        torch.manual_seed(0)
        model = unet.create_model("unet", **kw).eval()
        meta = export_metadata(model, {"mode": "percentile"})
        session = onnxruntime_session(onnx_bytes(probability_net(model), meta), threads=threads)
        name = session.get_inputs()[0].name
        onnx_model = ExportedModel(lambda x: session.run(None, {name: x})[0], meta, backend="onnxruntime")
        tile_in = torch.from_numpy(np.ascontiguousarray(image[:572, :572]))[None, None]

        def torch_tile():
            with torch.inference_mode():
                return torch.softmax(model(tile_in), 1).numpy()

        def ort_tile():
            return onnx_model.predict_batch(tile_in.numpy())

        cases = {"tile572": {"torch": torch_tile, "onnxruntime": ort_tile}}
        tile = choose_tile_size(model, image.shape)
        cases["img2048"] = {
            "torch": lambda: predict_tiled(model, image, tile_size=tile),
            "onnxruntime": lambda: predict_tiled(onnx_model, image, tile_size=tile),
        }
        for case, fns in cases.items():
            if f"{net_name}:{case}" in args.skip:
                print(f"{net_name:6s} {case:8s} skipped", flush=True)
                continue
            results = {}
            for backend, fn in fns.items():
                load0 = _load()
                if case == "tile572":
                    out = fn()  # warm-up
                    times = []
                    for _ in range(args.repeats):
                        t = time.perf_counter()
                        out = fn()
                        times.append(time.perf_counter() - t)
                    seconds = statistics.median(times)
                    mpx = out.shape[-1] * out.shape[-2] / seconds / 1e6
                else:
                    t = time.perf_counter()
                    out = fn()
                    seconds = time.perf_counter() - t
                    mpx = image.size / seconds / 1e6
                results[backend] = out
                diff = float(np.abs(out - results["torch"]).max())
                row = dict(net=net_name, case=case, backend=backend, seconds=round(seconds, 3),
                           mpx_per_s=round(mpx, 4), max_abs_diff_to_torch=diff, load_before=load0,
                           load_after=_load(), tile=tile if case == "img2048" else 572)
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
