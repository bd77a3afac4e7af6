"""``unet predict``: segment image files of any size with the overlap-tile strategy (paper Fig. 2)."""

from __future__ import annotations

import glob
import sys
import warnings
from pathlib import Path

from unet.errors import UserError


def register(sub):
    p = sub.add_parser(
        "predict",
        help="predict probability maps, masks or instance labels for image files of any size",
        description="Overlap-tile prediction (Ronneberger et al. 2015, Fig. 2): output tiles partition the "
                    "image, each input tile carries the network's context, mirrored beyond the border. "
                    "Images are read and written tile by tile, so they may be larger than memory.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files (TIFF/BigTIFF, zarr, npy, PNG), folders or glob patterns")
    p.add_argument("--checkpoint", "-c", required=True,
                   help="model: a checkpoint (from unet train), or from unet export an .onnx or TorchScript file "
                        "or a bioimage.io package (.zip)")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default=None,
                   help="run the network with PyTorch or ONNX Runtime (needs unet[export]); same tiles, same "
                        "result (default: onnxruntime for .onnx files, else torch)")
    p.add_argument("-o", "--out", required=True,
                   help="output file (one input; .tif, .zarr, .png or .npy) or folder (gets STEM_OUTPUT.tif)")
    p.add_argument("--output", choices=["prob", "mask", "labels"], default="prob",
                   help="foreground probability, binary mask or instance labels (default: prob)")
    p.add_argument("--tile-size", type=int, default=None,
                   help="output tile size in pixels (default: the largest that fits --memory-limit)")
    p.add_argument("--memory-limit", default=None,
                   help="memory budget for a batch of tiles, e.g. 800M or 4G (default: 1G)")
    p.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass (default: 1)")
    p.add_argument("--tta", action="store_true", help="average over the 8 flips/rotations by 90 degrees")
    p.add_argument("--dtype", choices=["float32", "float16", "uint8"], default="float32",
                   help="probability output type; uint8 scales 0..1 to 0..255 (default: float32)")
    p.add_argument("--threshold", type=float, default=0.5, help="foreground = probability > T, strictly, as in the metrics (mask/labels; default: 0.5)")
    p.add_argument("--min-size", type=int, default=0, help="labels: drop components smaller than this (pixels)")
    p.add_argument("--format", choices=["tif", "zarr"], default="tif", help="output format in a folder (default: tif)")
    p.add_argument("--axes", default=None, help="input axes, e.g. YX, ZYX, YXC (default: inferred)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--nan-to-num", action="store_true",
                   help="predict NaN/infinite pixels of float images as the darkest value (default: an error)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or messages")
    p.set_defaults(func=run)


def expand_inputs(patterns) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> image paths, in order, without repeats."""
    from unet.inference.files import INPUT_SUFFIXES

    found: list[Path] = []
    for pat in patterns:
        path = Path(pat)
        if path.is_dir() and path.suffix.lower() != ".zarr":
            items = sorted(q for q in path.iterdir()
                           if q.suffix.lower() in INPUT_SUFFIXES and not q.name.startswith("."))
            if not items:
                raise UserError(f"{path}: folder contains no images ({', '.join(INPUT_SUFFIXES)})")
            found += items
        elif path.exists():
            found.append(path)
        elif glob.has_magic(pat):
            items = sorted(Path(q) for q in glob.glob(pat) if Path(q).suffix.lower() in INPUT_SUFFIXES)
            if not items:
                raise UserError(f"{pat}: no images match")
            found += items
        else:
            raise UserError(f"{path}: no such file")
    return list(dict.fromkeys(found))


def output_paths(inputs: list[Path], out: str, output: str, fmt: str) -> list[Path]:
    from unet.inference.files import OUTPUT_SUFFIXES

    out_path = Path(out)
    if len(inputs) == 1 and out_path.suffix.lower() in OUTPUT_SUFFIXES:
        return [out_path]
    if out_path.suffix.lower() in OUTPUT_SUFFIXES and not out_path.is_dir():
        raise UserError(f"{out_path}: {len(inputs)} inputs need an output folder, not a file name")
    if out_path.suffix and not out_path.is_dir():  # x.jpg is a mistyped file, not a folder to create
        raise UserError(f"{out_path}: unsupported output type {out_path.suffix!r} (use {', '.join(OUTPUT_SUFFIXES)}; "
                        "or a folder: a name without extension, or an existing folder)")
    paths = [out_path / f"{p.name.split('.')[0]}_{output}.{fmt}" for p in inputs]
    dup = {p for p in paths if paths.count(p) > 1}
    if dup:
        raise UserError(f"inputs with the same name would write the same output: {sorted(map(str, dup))[0]}")
    return paths


def run(args) -> int:
    # unet.inference, unet.export, unet.training import torch: imported when the command runs, not for --help
    from unet.inference.tiling import set_threads_for_cli

    inputs = expand_inputs(args.inputs)
    outputs = output_paths(inputs, args.out, args.output, args.format)
    _check_args(args, outputs)
    set_threads_for_cli()
    model, normalize, device = _load_model(args)
    warned = False
    for src, dst in zip(inputs, outputs):
        warned = _predict_one(args, model, normalize, device, src, dst, warned=warned)
        if not args.quiet:
            print(f"{src} -> {dst}", file=sys.stderr)
    return 0


def _check_args(args, outputs: list[Path]) -> None:
    """Refuse bad options and existing outputs before a model is loaded."""
    from unet.inference.tiling import parse_memory

    if not args.overwrite:
        for o in outputs:
            if o.exists():
                raise UserError(f"{o}: already exists (pass --overwrite to replace it)")
    if not 0 <= args.threshold <= 1:  # also catches NaN
        raise UserError(f"--threshold must be a probability in [0, 1], got {args.threshold}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.min_size < 0:
        raise UserError(f"--min-size must be >= 0 pixels, got {args.min_size}")
    if args.memory_limit is not None:
        parse_memory(args.memory_limit)


def _load_model(args):
    """(model, normalisation settings, device) of ``--checkpoint``; says how ``--tile-size`` was rounded."""
    from unet.export.runtime import load_model
    from unet.inference.tiling import rounded_tile_size
    from unet.training.trainer import pick_device

    device = pick_device(args.device or "auto")
    model, normalize = load_model(args.checkpoint, backend=args.backend, device=device)
    if args.tile_size is not None:
        try:
            tile = rounded_tile_size(model, args.tile_size)
        except UserError as err:
            raise UserError(f"--tile-size: {err}") from err
        if tile[0] != args.tile_size and not args.quiet:
            print(f"note: --tile-size {args.tile_size} rounded down to {tile[0]}, a multiple of 2**depth = "
                  f"{2 ** getattr(model, 'depth', 0)} (the pooling grid)", file=sys.stderr)
    return model, normalize, device


def _predict_one(args, model, normalize, device, src: Path, dst: Path, *, warned: bool) -> bool:
    """Predict one file; print the tile-dependence warning once per run. Returns whether it was printed."""
    from unet.inference.files import predict_file
    from unet.inference.tiling import TileDependenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TileDependenceWarning)
        predict_file(model, src, dst, output=args.output, tile_size=args.tile_size, tta=args.tta,
                     overwrite=args.overwrite, threshold=args.threshold, min_size=args.min_size,
                     dtype=args.dtype, batch_size=args.batch_size, memory_limit=args.memory_limit,
                     device=device, axes=args.axes, normalize=normalize, progress=not args.quiet,
                     nan_to_num=args.nan_to_num)
    for w in caught:
        if not issubclass(w.category, TileDependenceWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        elif not warned:  # one warning per run, even with --quiet: it concerns the result
            print(f"unet predict: warning: {w.message}", file=sys.stderr)
            warned = True
    return warned
