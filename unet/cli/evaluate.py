"""``unet evaluate PRED GT``: score predictions against ground truth with the paper's metrics.

PRED and GT are image files (TIFF, PNG, npy; a multi-page TIFF or 3-D npy is a
stack) or folders of them.  Folders are paired by file stem (a prediction's
``_prob``/``_mask``/``_labels`` suffix from ``unet predict`` ignored), else by the
number at the end of the stem (``t002.tif`` <-> ``man_seg002.tif``); files that
pair by neither are an error unless ``--pair-by-order`` asks for natural sort
order (``2`` before ``10``).  A stack file against a folder with one file per
slice is split into its slices (folder in natural sort order).

Metrics (``--metric``, repeatable; default ``seg`` when any ground-truth file
holds instance labels, else ``isbi``):

* ``isbi``: pixel, Rand and warping errors of the ISBI 2012 challenge
  (:func:`unet.metrics.isbi_errors`).  GT: 0 = membrane, >0 = cell (ISBI PNGs
  are 0/255).  PRED: cell probability in [0, 1]; 8-bit images (0..255) are
  divided by 255.  A stack is scored as one volume (counts summed over slices).
* ``seg``: Cell Tracking Challenge SEG (:func:`unet.metrics.seg_score`).  GT:
  instance labels.  PRED: instance labels; a binary mask is split into its
  face-connected components (4-connected in 2-D), frame by frame; a
  probability map (floating point) into the cells of
  :func:`unet.inference.cell_instances`: components of ``> 0.5`` (``--threshold``), or with
  ``--seed-threshold T`` a seeded watershed within it, frame by frame.
* ``iou``: foreground intersection over union (:func:`unet.metrics.iou`);
  probability maps are thresholded at 0.5 (``--threshold``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from pathlib import Path

from unet.errors import InputFileError, UserError

# numpy, SciPy and the scoring are imported inside the functions that use them: `unet --help` imports
# this module to register the subcommand, and must stay fast (scripts/bench_startup.py)

METRICS = ("isbi", "seg", "iou")
COLUMNS = {
    "isbi": ("pixel_error", "rand_error", "warping_error"),
    "seg": ("seg",),
    "iou": ("iou",),
}


DESCRIPTION = (
    "Score predictions against ground truth. PRED and GT are image files (TIFF/PNG/npy, stacks allowed) or "
    "folders matched by file stem (a _prob/_mask/_labels suffix ignored), else by trailing number; "
    "--pair-by-order pairs by natural sort order. 8-bit predictions (0..255) are scaled to [0, 1]."
)


def register(sub):
    p = sub.add_parser("evaluate", help="score predictions against ground truth (ISBI errors, SEG, IoU)",
                       description=DESCRIPTION)
    p.add_argument("pred", metavar="PRED", help="prediction file or folder (cell probability or labels)")
    p.add_argument("gt", metavar="GT", help="ground-truth file or folder")
    p.add_argument("--metric", action="extend", type=_metric_list, default=None, metavar="{isbi,seg,iou}",
                   help="metric(s) to compute: repeat the option or separate by commas, e.g. --metric isbi,iou "
                        "(default: seg if any GT file holds instance labels, else isbi)")
    p.add_argument("--seed-threshold", type=float, default=None, metavar="T",
                   help="seg of a probability map: cells by seeded watershed from the cores > T "
                        "(default: connected components of > 0.5)")
    p.add_argument("--threshold", type=float, default=0.5, metavar="F",
                   help="foreground of a probability map = probability > F, for seg (the cells, or the watershed's "
                        "extent) and iou (default: 0.5, the paper's; unet reproduce reports the watershed's choice)")
    p.add_argument("--pred-kind", choices=["auto", "prob", "labels"], default="auto",
                   help="what the predictions are: auto (floating point or tagged by unet predict as prob = "
                        "probability map, two values = mask, else instance labels), prob (also 8-bit 0..255) "
                        "or labels (default: auto)")
    p.add_argument("--pair-by-order", action="store_true",
                   help="pair folders by sorted file order (numbers in names compared as numbers) when the "
                        "names do not match (default: an error)")
    p.add_argument("--json", default=None, metavar="OUT.json", help="also write per-image values and the mean as JSON")
    p.add_argument("--csv", default=None, metavar="OUT.csv", help="also write per-image values and the mean as CSV")
    p.add_argument("--overwrite", action="store_true", help="replace existing --json/--csv files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _metric_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in METRICS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown metric {', '.join(bad) or text!r} (choose from {', '.join(METRICS)})")
    return names


# ---------------------------------------------------------------- inputs


def natural_key(name: str):
    """Sort key reading runs of digits as numbers: ``2_prob`` < ``10_prob`` < ``28_prob``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", name) if t]


def _list_images(path: Path) -> list[Path]:
    from unet.io import IMAGE_SUFFIXES

    return sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith(".")), key=lambda p: natural_key(p.name))


#: suffixes ``unet predict`` appends to the input's stem (``STEM_prob.tif``, ``STEM_mask.tif``, ``STEM_labels.tif``)
PREDICT_SUFFIXES = ("_prob", "_mask", "_labels")


def _pred_stem(stem: str) -> str:
    for suffix in PREDICT_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _trailing_number(stem: str):
    m = re.search(r"(\d+)$", stem)
    return int(m.group(1)) if m else None


def match_files(pred_files: list[Path], gt_files: list[Path], *,
                by_order: bool = False) -> tuple[list[tuple[Path, Path]], str]:
    """Pair prediction and ground-truth files; returns the pairs and how they were matched.

    Rules, in order: equal stems, where a prediction's ``_prob``/``_mask``/``_labels``
    suffix (from ``unet predict``) is ignored; else equal numbers at the end of the
    stems (Cell Tracking Challenge ``t002`` <-> ``man_seg002``); else, only with
    ``by_order``, natural sort order (numbers compared as numbers).  Files that
    pair by none of these are an error, never paired silently.
    """
    for rule, key in (("file stem", lambda s: s), ("file stem without _prob/_mask/_labels", _pred_stem)):
        by_stem = {}
        for p in pred_files:
            by_stem.setdefault(key(p.stem), []).append(p)
        if gt_files and all(len(by_stem.get(g.stem, ())) == 1 for g in gt_files):
            return [(by_stem[g.stem][0], g) for g in gt_files], rule
    pred_nums = [_trailing_number(_pred_stem(p.stem)) for p in pred_files]
    gt_nums = [_trailing_number(g.stem) for g in gt_files]
    if (None not in pred_nums and None not in gt_nums and len(set(pred_nums)) == len(pred_nums)
            and len(set(gt_nums)) == len(gt_nums) and set(gt_nums) <= set(pred_nums)):
        by_num = dict(zip(pred_nums, pred_files))
        return [(by_num[n], g) for n, g in zip(gt_nums, gt_files)], "number at the end of the file stem"
    if by_order and len(pred_files) == len(gt_files):
        order = lambda files: sorted(files, key=lambda p: natural_key(p.name))  # noqa: E731
        return list(zip(order(pred_files), order(gt_files))), "sorted order (--pair-by-order)"
    stems = {_pred_stem(p.stem) for p in pred_files}
    missing = [g.name for g in gt_files if g.stem not in stems][:5]
    more = " ..." if len(missing) == 5 else ""
    hint = (" (pass --pair-by-order to pair them by sorted order)" if len(pred_files) == len(gt_files)
            else "")
    raise UserError(
        f"cannot pair {len(pred_files)} prediction files with {len(gt_files)} ground-truth files by name: "
        f"no prediction named like {', '.join(missing) or 'the ground truth'}{more}{hint}"
    )


def _items(pred: Path, gt: Path, *, by_order: bool = False):
    """``(name, pred file, pred slice, gt file, gt slice)`` per image to score, and the matching rule.

    A slice is ``None`` for a whole file."""
    from unet.io import read_image

    for path in (pred, gt):
        if not path.exists():
            raise InputFileError(path, "no such file or folder")
    if pred.is_dir() and gt.is_dir():
        pred_files, gt_files = _list_images(pred), _list_images(gt)
        if not gt_files:
            raise InputFileError(gt, "folder holds no image files (.tif, .png, .npy, ...)")
        if not pred_files:
            raise InputFileError(pred, "folder holds no image files (.tif, .png, .npy, ...)")
        pairs, rule = match_files(pred_files, gt_files, by_order=by_order)
        return [(g.stem, p, None, g, None) for p, g in pairs], rule
    if pred.is_file() and gt.is_file():
        return [(gt.stem, pred, None, gt, None)], "the two files given"
    # One stack file against a folder with one image per slice.
    stack, folder = (pred, gt) if pred.is_file() else (gt, pred)
    files = _list_images(folder)
    n = read_image(stack).shape[0] if files else 0
    if not files or n != len(files):
        raise UserError(f"{stack} is one file but {folder} is a folder of {len(files)} images: "
                        f"give two files, two folders, or a stack with one slice per image")
    if stack is pred:
        return [(f.stem, pred, i, f, None) for i, f in enumerate(files)], f"slice order of {stack.name}"
    return [(f.stem, f, None, gt, i) for i, f in enumerate(files)], f"slice order of {stack.name}"


def _load(path: Path, index, cache: dict):
    """Read one file, or slice ``index`` of a stack (stacks are read once)."""
    import numpy as np

    from unet.io import read_image

    if index is None:
        return np.asarray(read_image(path))
    if path not in cache:
        cache[path] = read_image(path)
    return np.asarray(cache[path][index])


def _drop_gray_channels(arr, reference_ndim: int, path: Path):
    """Gray images saved as RGB(A) PNGs: keep one channel when all are equal."""
    import numpy as np

    if arr.ndim == reference_ndim + 1 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if np.all(rgb == rgb[..., :1]):
            return rgb[..., 0]
        raise InputFileError(path, f"colour image {arr.shape}, expected a single-channel image")
    return arr


def proposal_in_unit_range(arr, path: Path):
    """Cell probabilities in [0, 1]: 8-bit images are divided by 255."""
    import numpy as np

    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255)
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    arr = arr.astype(np.float32) if np.issubdtype(arr.dtype, np.floating) else arr
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 1 or not np.isfinite(lo + hi):
        raise InputFileError(path, f"prediction values must lie in [0, 1] (or be 8-bit 0..255), found [{lo:g}, {hi:g}]")
    return arr.astype(np.float32)


def prediction_kind(arr, known: str | None = None) -> str:
    """``"prob"``, ``"mask"`` or ``"labels"``: how ``seg`` reads a prediction.

    ``known`` (from ``--pred-kind`` or the ``unet_output`` tag that ``unet predict``
    writes into TIFF/zarr outputs) wins; else floating point is a probability
    map, at most two values a binary mask, anything else instance labels.  An
    8-bit probability map (``unet predict --dtype uint8``) is thus recognised by
    its tag; a tag-less one (e.g. a PNG) needs ``--pred-kind prob``.
    """
    import numpy as np

    if known is not None:
        return known
    if np.issubdtype(arr.dtype, np.floating):
        return "prob"
    return "mask" if _is_binary(arr) else "labels"


def _is_binary(arr) -> bool:
    import numpy as np

    return np.unique(arr).size <= 2


# ---------------------------------------------------------------- scoring


def score_pair(pred_arr, gt_arr, metrics, pred_path: Path, gt_path: Path, *,
               seed_threshold: float | None = None, threshold: float = 0.5,
               pred_kind: str | None = None) -> tuple[dict, list[str]]:
    """Compute the requested metrics for one (prediction, ground truth) pair with :mod:`unet.scoring`.

    ``pred_kind`` (``"prob"``, ``"mask"``, ``"labels"`` or None) is what the
    prediction is when known (``--pred-kind``, or the tag ``unet predict`` writes
    into its TIFFs); see :func:`prediction_kind`."""
    import numpy as np

    from unet import scoring as S
    from unet.metrics import MetricInputError

    pred_arr = _drop_gray_channels(pred_arr, gt_arr.ndim, pred_path)
    gt_arr = _drop_gray_channels(gt_arr, pred_arr.ndim, gt_path)
    if pred_arr.shape != gt_arr.shape:
        raise UserError(f"{pred_path} has shape {pred_arr.shape} but {gt_path} has shape {gt_arr.shape}")
    if not np.any(gt_arr):
        raise InputFileError(gt_path, "ground truth is empty (all zeros)")
    values, notes = {}, []
    try:
        if "isbi" in metrics:
            values.update(S.isbi_scores([proposal_in_unit_range(pred_arr, pred_path)], [gt_arr]))
        if "seg" in metrics:
            predicted = _pred_instances(pred_arr, pred_path, pred_kind, seed_threshold, notes, threshold=threshold)
            values["seg"] = S.seg([gt_arr], [predicted])
        if "iou" in metrics:
            values.update(S.overlap_scores([gt_arr], [_pred_foreground(pred_arr, pred_path, pred_kind, threshold)],
                                           names=("iou",)))
    except MetricInputError as err:
        raise UserError(f"{pred_path} vs {gt_path}: {err}") from err
    return values, notes


def _pred_instances(pred, path: Path, pred_kind, seed_threshold, notes: list, *, threshold: float = 0.5):
    """The objects of a prediction for ``seg``: cells of a probability map, components of a mask, or its labels."""
    import numpy as np
    from scipy import ndimage

    from unet import scoring as S

    kind = prediction_kind(pred, pred_kind)
    if kind == "prob":
        prob = proposal_in_unit_range(pred, path)
        try:
            cells = S.instances(prob.reshape(-1, *prob.shape[-2:]), threshold=threshold,
                                seed_threshold=seed_threshold)
        except ValueError as err:
            raise UserError(f"--seed-threshold: {err}") from err
        how = (f"components of > {threshold:g}" if seed_threshold is None
               else f"seeded watershed from cores > {seed_threshold:g} within > {threshold:g}")
        notes.append(f"{path.name}: probability map, cells = {how}")
        return np.stack(cells).reshape(prob.shape)
    if kind == "mask":
        structure = ndimage.generate_binary_structure(pred.ndim, 1)
        if pred.ndim >= 3:  # frames (axis 0) are independent: no connectivity across them
            structure[0] = structure[2] = False
        notes.append(f"{path.name}: binary mask, objects = its face-connected components")
        return ndimage.label(pred != 0, structure=structure)[0]
    if pred.dtype == np.uint8 and pred_kind is None:
        notes.append(f"{path.name}: 8-bit image without unet predict's tag read as instance labels "
                     "(pass --pred-kind prob if it is a 0..255 probability map)")
    return pred


def _pred_foreground(pred, path: Path, pred_kind, threshold: float = 0.5):
    """The foreground of a prediction for ``iou``: a probability map's pixels > ``threshold``, else nonzero."""
    import numpy as np

    if prediction_kind(pred, pred_kind) == "prob" or (pred.dtype == np.uint8 and pred_kind is None
                                                      and not _is_binary(pred)):
        prob = proposal_in_unit_range(pred, path)
        return prob if threshold == 0.5 else prob > threshold  # as it is, the metric's own > 0.5
    return pred != 0  # mask or instance labels


def default_metrics(gt_arrays) -> list[str]:
    """``seg`` if any ground truth holds instance labels (more than two values), else ``isbi``.

    Decided from all files: a Cell Tracking frame with a single cell looks binary
    on its own, and must not switch the whole folder to the ISBI errors."""
    return ["seg"] if any(not _is_binary(a) for a in gt_arrays) else ["isbi"]


# ---------------------------------------------------------------- outputs


def _table_columns(metrics) -> list[str]:
    cols = []
    for m in metrics:
        cols.extend(COLUMNS[m])
    return cols


def to_csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["name", "pred", "gt", *columns], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(float(v)) if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def _print_table(rows, mean, columns, rule, notes):
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(title=f"{len(rows)} image{'s' * (len(rows) != 1)}, paired by {rule}")
    table.add_column("image")
    for c in columns:
        table.add_column(c, justify="right")
    for row in rows:
        table.add_row(row["name"], *(f"{row[c]:.6f}" for c in columns))
    table.add_section()
    table.add_row("mean", *(f"{mean[c]:.6f}" for c in columns), style="bold")
    console.print(table)
    for note in notes:
        console.print(f"note: {note}")


def run(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from unet.inference.files import read_output_tag
    from unet.io import write_text_atomic

    if not 0 <= args.threshold < 1:
        raise UserError(f"--threshold must lie in [0, 1), got {args.threshold}")
    for out in (args.json, args.csv):
        if out and Path(out).exists() and not args.overwrite:
            raise UserError(f"{out}: already exists (pass --overwrite to replace it)")
    items, rule = _items(Path(args.pred), Path(args.gt), by_order=args.pair_by_order)
    metrics = list(dict.fromkeys(args.metric)) if args.metric else None
    rows, notes, cache = [], [], {}
    if metrics is None:  # one more pass over the ground truth, one file at a time
        metrics = default_metrics(_load(gt_path, gt_slice, cache) for _, _, _, gt_path, gt_slice in items)
    quiet = args.quiet or not sys.stderr.isatty()
    for name, pred_path, pred_slice, gt_path, gt_slice in tqdm(items, desc="evaluate", unit="image", disable=quiet):
        gt_arr = _load(gt_path, gt_slice, cache)
        pred_arr = _load(pred_path, pred_slice, cache)
        kind = args.pred_kind if args.pred_kind != "auto" else read_output_tag(pred_path)
        values, pair_notes = score_pair(pred_arr, gt_arr, metrics, pred_path, gt_path,
                                        seed_threshold=args.seed_threshold, threshold=args.threshold,
                                        pred_kind=kind)
        notes.extend(pair_notes)
        rows.append({"name": name, "pred": str(pred_path), "gt": str(gt_path), **values})
    columns = _table_columns(metrics)
    mean = {c: float(np.mean([r[c] for r in rows])) for c in columns}
    if rule.startswith("sorted order"):
        notes.insert(0, "file stems differ: predictions were paired with ground truth by sorted order")
    _print_table(rows, mean, columns, rule, notes)
    if args.json:
        doc = {"metrics": metrics, "matched_by": rule, "images": rows, "mean": mean}
        write_text_atomic(args.json, json.dumps(doc, indent=2) + "\n", overwrite=args.overwrite)
    if args.csv:
        write_text_atomic(args.csv, to_csv(rows + [{"name": "mean", "pred": "", "gt": "", **mean}], columns),
                          overwrite=args.overwrite)
    return 0
