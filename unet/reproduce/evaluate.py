"""Predict a held-out fold once from the final checkpoint, save it, and score the saved files.

The numbers of a report are computed from the probability maps *as written
to disk* (``predictions/<variant>/<image>.tif``, float32 cell probability), so
anyone can recompute them with :func:`fold_metrics` or ``unet evaluate``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unet import scoring as S
from unet.data import DEFAULT_NORMALIZE, load_sample
from unet.inference import predict_tiled
from unet.inference.labels import (MEMBRANE_MIN_CELL_GRID, MEMBRANE_MIN_SEED_GRID, MEMBRANE_SEED_GRID,
                                   SEED_THRESHOLD)
from unet.inference.labels import membrane_watershed as close_gaps  # `membrane_watershed` names options here
from unet.io import read_image, write_image
from unet.reproduce.experiment import METRICS, WATERSHED_SUFFIX


#: seed thresholds tried on a fold's training images (:func:`choose_seed_threshold`)
SEED_GRID = (0.6, 0.7, 0.8, 0.9, 0.95)
#: foreground thresholds of the seeded watershed, tried with the chosen seeds (:func:`choose_cell_watershed`).
#: 0.5 first, the paper's cells (ties keep it); lower ones grow each cell towards its border, which the
#: border-weighted loss (eq. 2) pushes the network to call background (session 12: on the committed
#: checkpoints' own training frames, 0.3-0.4 scored SEG 0.01-0.02 above 0.5; 0.2 and 0.1 were added when 0.3,
#: then the grid's edge, won on the validation frames of both DIC-HeLa folds, before any held-out score of it)
FOREGROUND_GRID = (0.5, 0.4, 0.3, 0.2, 0.1)


def choose_seed_threshold(probs, labels, *, grid=SEED_GRID, min_size: int = 0) -> tuple[float, dict]:
    """The seed threshold of the seeded watershed with the best SEG on these (training) images.

    Returns the threshold and ``{threshold: SEG}`` for every one tried. Ties go
    to the first in ``grid``.
    """
    labels = [np.asarray(g) for g in labels]
    scores = {float(t): S.seg(labels, S.instances(probs, seed_threshold=t, min_size=min_size)) for t in grid}
    return max(scores, key=lambda t: (scores[t], -list(scores).index(t))), scores


def choose_cell_watershed(probs, labels, *, seed_grid=SEED_GRID, foreground_grid=FOREGROUND_GRID,
                          min_size: int = 0) -> tuple[dict, dict]:
    """Seed and foreground thresholds of the seeded watershed (:func:`unet.inference.cell_instances`).

    The seeds first, with the paper's foreground (probability > 0.5): they
    decide which cells are divided (:func:`choose_seed_threshold`); then, with
    those seeds, the foreground threshold, which decides how far each cell
    reaches. Both by SEG on these images (training or validation images, never
    held-out ones); ties go to the first tried.

    Returns
    -------
    best : dict
        ``{"threshold": seed threshold, "foreground_threshold": f}``.
    scores : dict
        ``{"seeds": {t: SEG}, "foreground": {f: SEG}}``.
    """
    labels = [np.asarray(g) for g in labels]
    seed, seeds = choose_seed_threshold(probs, labels, grid=seed_grid, min_size=min_size)
    fg = {float(f): S.seg(labels, S.instances(probs, threshold=f, seed_threshold=seed, min_size=min_size))
          for f in foreground_grid}
    best = max(fg, key=lambda f: (fg[f], -list(fg).index(f)))
    return {"threshold": seed, "foreground_threshold": best}, {"seeds": seeds, "foreground": fg}


def _seed_record(probs, labels, on: str, min_size: int) -> dict:
    """A seeded-watershed choice as reports store it: the parameters and every score behind them."""
    chosen, scores = choose_cell_watershed(probs, labels, min_size=min_size)
    return {**chosen, f"{on}_seg_watershed": {str(t): v for t, v in scores["seeds"].items()},
            f"{on}_seg_foreground": {str(f): v for f, v in scores["foreground"].items()}}


#: what chooses the smallest cell region kept by the gap closing (:func:`choose_membrane_watershed`); stored
#: with a choice, so that one made by another criterion (until session 17: the warping error alone) is made again
MIN_CELL_CRITERION = "rand_error*warping_error"


def choose_membrane_watershed(probs, labels, *, seed_grid=None, min_seed_grid=None,
                              min_cell_grid=(0,)) -> tuple[dict, dict]:
    """Parameters of :func:`unet.inference.membrane_watershed`, chosen on these images.

    Meant for validation images (or a fold's training images), never its
    held-out ones.  The seeds (threshold, smallest core) are chosen by the
    ISBI Rand error, the merges that gap closing is for; then, with those
    seeds, the smallest cell region kept (``min_cell_grid``) by the product
    of the Rand and warping errors (:data:`MIN_CELL_CRITERION`).  Removing
    specks lowers the warping error (a fragment cut off a cell is a split) but
    turns small true cells into membrane, which raises the Rand error: on the
    ISBI validation slices of fold 1 (TTA maps), cells under 200 px removed took the
    warping error from 0.00202 to 0.00148 and the Rand error from 0.015 to
    0.026.  The product weighs a relative change of either error alike and
    needs no scale.  Both errors are the challenge's (minimised over
    thresholds) on the stack of the images, as they are reported.

    Returns
    -------
    best : dict
        ``{"seed_threshold": t, "min_seed_size": m}``, plus ``"min_cell_size"``
        when ``min_cell_grid`` has more than one value; ties go to the first tried.
    scores : dict
        ``{"t/m": Rand error}`` for every pair tried, plus ``"none"`` for the
        unprocessed predictions (for the report), and ``{"cell/k": warping error}``
        and ``{"cell_rand/k": Rand error}`` for every smallest cell region tried.
    """
    seed_grid = MEMBRANE_SEED_GRID if seed_grid is None else seed_grid
    min_seed_grid = MEMBRANE_MIN_SEED_GRID if min_seed_grid is None else min_seed_grid
    labels = [np.asarray(g) for g in labels]
    probs = [np.asarray(p, np.float32) for p in probs]

    def error(maps, name="rand_error") -> float:
        return float(S.isbi_scores(maps, labels, errors=(name,))[name])

    scores = {"none": error(probs)}
    best = None
    for t in seed_grid:
        for m in min_seed_grid:
            r = error([close_gaps(p, seed_threshold=t, min_seed_size=m) for p in probs])
            scores[f"{float(t):g}/{int(m)}"] = r
            if best is None or r < best[0]:
                best = (r, {"seed_threshold": float(t), "min_seed_size": int(m)})
    chosen = best[1]
    if len(min_cell_grid) > 1:
        both = {int(k): S.isbi_scores([close_gaps(p, **chosen, min_cell_size=int(k)) for p in probs], labels,
                                      errors=("rand_error", "warping_error")) for k in min_cell_grid}
        scores |= {f"cell/{k}": float(e["warping_error"]) for k, e in both.items()}
        scores |= {f"cell_rand/{k}": float(e["rand_error"]) for k, e in both.items()}
        product = {k: float(e["rand_error"]) * float(e["warping_error"]) for k, e in both.items()}
        chosen = dict(chosen, min_cell_size=min(product, key=lambda k: (product[k], list(product).index(k))))
    return chosen, scores


def _predict_saved(model, samples, out_dir, folder: str, *, tta: bool, tile_size, device, progress: bool) -> list:
    """Overlap-tile cell probabilities of ``samples``, written to ``out_dir/predictions/<folder>/`` and read back."""
    probs = []
    for s in samples:
        img = s.image[0] if s.image.shape[0] == 1 else s.image
        prob = predict_tiled(model, img, tile_size=tile_size, tta=tta, device=device,
                             progress=progress)[1].astype(np.float32)
        path = prediction_path(out_dir, folder, s.name)
        write_image(path, prob, overwrite=True)
        probs.append(read_image(path))  # score what was saved
    return probs


def _load_model(checkpoint, device):
    """``(model, normalisation, device)`` of a checkpoint, for prediction."""
    # torch comes with the checkpoint, here only: `import unet.reproduce` (`unet reproduce --list`) stays without it
    import torch

    from unet.checkpoint import load_checkpoint

    device = torch.device(device or "cpu")
    model, meta = load_checkpoint(checkpoint, map_location=device, with_metadata=True)
    # the checkpoint's own normalisation (as in training); the package default for older checkpoints
    return model, meta.get("normalize") or DEFAULT_NORMALIZE, device


def predict_saved(checkpoint, pairs, out_dir, *, variant: str = "plain", tile_size=None, device=None) -> list:
    """Predict ``pairs`` with ``checkpoint`` as :func:`evaluate_fold` does (its normalisation, overlap-tile,
    ``variant``), save to ``out_dir/predictions/<variant>/`` and return the saved maps, without scoring."""
    model, norm, device = _load_model(checkpoint, device)
    samples = [load_sample(p, normalize=norm) for p in pairs]
    return _predict_saved(model, samples, out_dir, variant, tta=variant == "tta", tile_size=tile_size,
                          device=device, progress=False)


def prediction_path(out_dir, variant: str, name: str) -> Path:
    return Path(out_dir) / "predictions" / variant / (str(name).replace("/", "_") + ".tif")


def fold_metrics(kind: str, probs, labels, *, min_size: int = 0, seed_threshold: float | None = None,
                 foreground_threshold: float = 0.5, membrane_watershed: dict | None = None) -> dict:
    """Challenge measures of one held-out fold.

    Parameters
    ----------
    kind : {"isbi", "seg"}
        ``"isbi"``: pixel, Rand and warping errors (:func:`unet.metrics.isbi_errors`)
        of the stack of held-out slices, counts pooled over the slices as the
        challenge's script does for its 30-slice test stack (paper Table 1).
        ``"seg"``: the Cell Tracking Challenge SEG (:func:`unet.metrics.seg_score`)
        pooled over every ground-truth object of the fold's annotated frames
        (paper Table 2).
    probs : sequence of (H, W) arrays
        Cell probabilities (1 = cell), one per held-out image.
    labels : sequence of (H, W) int arrays
        Instance labels of the same images (0 = background / membrane).
    min_size : int
        ``"seg"``: predicted cells smaller than this are dropped.
    seed_threshold : float, optional
        ``"seg"``: seed threshold of the seeded watershed behind
        ``seg_watershed`` (default :data:`unet.inference.labels.SEED_THRESHOLD`);
        ``seg`` uses the paper's instances, the connected components of
        ``prob > 0.5`` (:func:`unet.inference.cell_instances`).
    foreground_threshold : float
        ``"seg"``: the watershed's cells are ``prob >`` this (chosen with the
        seeds, :func:`choose_cell_watershed`); ``seg`` keeps the paper's 0.5.
    membrane_watershed : dict, optional
        ``"isbi"``: parameters of :func:`unet.inference.membrane_watershed`
        (chosen on training images); adds the three errors of the
        post-processed maps as ``warping_error_watershed``, ... (an extra row
        beyond the paper: gaps of the membrane map closed).
    """
    probs = [np.asarray(p, np.float64) for p in probs]
    labels = [np.asarray(g) for g in labels]
    if kind == "isbi":
        return _isbi_fold(probs, labels, membrane_watershed)
    if kind == "seg":
        seed = SEED_THRESHOLD if seed_threshold is None else float(seed_threshold)
        fg = float(foreground_threshold)
        return {"seg": S.seg(labels, S.instances(probs, min_size=min_size)),
                "seg_watershed": S.seg(labels, S.instances(probs, threshold=fg, seed_threshold=seed,
                                                           min_size=min_size)),
                "seed_threshold": seed, "foreground_threshold": fg}
    raise ValueError(f"unknown evaluation kind {kind!r}")


def _isbi_fold(probs, labels, watershed: dict | None) -> dict:
    """The three ISBI errors of the fold's stack with their thresholds, and of the gap-closed maps."""
    r = S.isbi_scores(probs, labels)
    out = {k: float(r[k]) for k in METRICS["isbi"]} | {
        "pixel_threshold": r["pixel_threshold"], "rand_threshold": r["rand_threshold"],
        "warping_threshold": r["warping_threshold"]}
    if watershed is not None:
        rw = S.isbi_scores([close_gaps(p, **watershed) for p in probs], labels)
        out |= {f"{k}{WATERSHED_SUFFIX}": float(rw[k]) for k in METRICS["isbi"]}
        out["membrane_watershed"] = dict(watershed)
    return out


def postprocessing_grid(kind: str, *, membrane_watershed: bool = False) -> dict:
    """The values :func:`choose_postprocessing` tries (stored with a choice: another grid is another choice)."""
    if kind == "seg":
        return {"seed_threshold": list(SEED_GRID), "foreground_threshold": list(FOREGROUND_GRID)}
    if kind == "isbi" and membrane_watershed:
        return {"seed_threshold": list(MEMBRANE_SEED_GRID), "min_seed_size": list(MEMBRANE_MIN_SEED_GRID),
                "min_cell_size": list(MEMBRANE_MIN_CELL_GRID), "min_cell_by": MIN_CELL_CRITERION}
    return {}


def choose_postprocessing(checkpoint, pairs, out_dir, *, kind: str, tile_size=None, device=None, min_size: int = 0,
                          membrane_watershed: bool = False, on: str = "validation",
                          variants=("plain",)) -> dict:
    """Choose the post-processing parameters on ``pairs``, predicted from ``checkpoint``.

    Issue 11: the parameters are best chosen on images the network did not
    train on (a model trained on a fold's training images minus validation
    images, predicting those), because predictions of its own training images
    are cleaner than any held-out prediction and favour milder post-processing
    than held-out maps need.  Each variant in ``variants`` is chosen on
    validation maps predicted the same way (``"tta"``: the average of the 8
    flips/rotations, smoother and more confident than plain maps), since the
    parameters are applied to held-out maps of that variant.

    Returns
    -------
    dict
        ``kind="seg"``: ``{"seed_selection": {"threshold", "foreground_threshold",
        "chosen_on", "images", "<on>_seg_watershed": {t: SEG}, "<on>_seg_foreground":
        {f: SEG}}}`` (:func:`choose_cell_watershed`); ``kind="isbi"`` with
        ``membrane_watershed``: ``{"watershed_selection": {"seed_threshold",
        "min_seed_size", "min_cell_size", "chosen_on", "images",
        "<on>_rand_error": {"t/m": error}, "<on>_warping_error": {k: error},
        "<on>_cell_rand_error": {k: error}}}`` (the seeds chosen by Rand error,
        then the smallest cell by Rand error x warping error,
        :data:`unet.inference.labels.MEMBRANE_MIN_CELL_GRID`);
        otherwise ``{}``.  The top level is the choice for plain maps; with
        ``"tta"`` in ``variants`` the selection also holds ``"tta"``: the same
        keys (less ``chosen_on`` and ``images``) chosen on TTA maps.  Pass it to
        :func:`evaluate_fold` as ``postprocessing``.
    """
    if not postprocessing_grid(kind, membrane_watershed=membrane_watershed):
        return {}
    model, norm, device = _load_model(checkpoint, device)
    samples = [load_sample(p, normalize=norm) for p in pairs]
    names, labels = [s.name for s in samples], [s.labels for s in samples]
    key = "seed_selection" if kind == "seg" else "watershed_selection"
    out = {}
    for variant in ("plain", *[v for v in variants if v != "plain"]):
        folder = on if variant == "plain" else f"{on}-{variant}"
        probs = _predict_saved(model, samples, out_dir, folder, tta=variant == "tta", tile_size=tile_size,
                               device=device, progress=False)
        if kind == "seg":
            sel = _seed_record(probs, labels, on, min_size)
        else:
            ws, scores = choose_membrane_watershed(probs, labels, min_cell_grid=MEMBRANE_MIN_CELL_GRID)
            cells = {k.split("/")[1]: v for k, v in scores.items() if k.startswith("cell/")}
            cell_rand = {k.split("/")[1]: v for k, v in scores.items() if k.startswith("cell_rand/")}
            sel = {**ws, f"{on}_rand_error": {k: v for k, v in scores.items() if not k.startswith("cell")},
                   f"{on}_warping_error": cells, f"{on}_cell_rand_error": cell_rand}
        if variant == "plain":
            out[key] = {**sel, "chosen_on": on, "images": names}
        else:
            out[key][variant] = sel
    return out


#: the keys of a post-processing choice that are parameters (the rest are its record)
_PARAMETERS = ("threshold", "foreground_threshold", "seed_threshold", "min_seed_size", "min_cell_size")


def _parameters_for(selection: dict | None, variant: str) -> dict | None:
    """The parameters a choice gives maps of ``variant``: its own if chosen on that variant, else the plain ones."""
    if selection is None:
        return None
    sel = selection.get(variant) if isinstance(selection.get(variant), dict) else selection
    return {k: v for k, v in sel.items() if k in _PARAMETERS}


def evaluate_fold(checkpoint, pairs, out_dir, *, kind: str, variants=("plain",), tile_size=None, device=None,
                  min_size: int = 0, train_pairs=None, progress: bool = False,
                  membrane_watershed: bool = False, postprocessing: dict | None = None) -> dict:
    """Predict ``pairs`` with ``checkpoint`` (overlap-tile, paper Fig. 2), save, score.

    Parameters
    ----------
    checkpoint : path
        The run's final checkpoint (``last.pt``); never ``best.pt``, which
        would have been chosen on some data.
    pairs : list of ImagePair
        The held-out images, with masks.
    out_dir : path
        Predictions go to ``out_dir/predictions/<variant>/``.
    variants : sequence of {"plain", "tta"}
        ``"tta"`` averages the 8 flips/rotations by 90 degrees (the input and 7
        transformed copies; paper Sec. 4: "averaging over 7 rotated versions of
        the input data" for ISBI 2012).
    tile_size : int, optional
        Output tile of the overlap-tile prediction (default: from the memory budget).
    train_pairs : list of ImagePair, optional
        ``kind="seg"``: the fold's training images. The seed and foreground
        thresholds of the seeded watershed are chosen on them
        (:func:`choose_cell_watershed`, plain predictions) and then applied to the held-out images, so it is
        never tuned on the test fold.  ``kind="isbi"`` with
        ``membrane_watershed``: the parameters of the gap-closing
        post-processing are chosen on them the same way
        (:func:`choose_membrane_watershed`).
    membrane_watershed : bool
        ``kind="isbi"``: also score the post-processed maps (see :func:`fold_metrics`).
    postprocessing : dict, optional
        Parameters already chosen elsewhere (:func:`choose_postprocessing` on
        validation images); then ``train_pairs`` choose nothing.  Maps of a
        variant with a choice of its own (``postprocessing[key][variant]``)
        get that one, the others the plain choice.

    Returns
    -------
    dict
        ``{variant: {metric: value}}``; with ``train_pairs`` also
        ``{"seed_selection": {"threshold": t, "foreground_threshold": f,
        "train_seg_watershed": {t: SEG}, "train_seg_foreground": {f: SEG}}}``.
    """
    model, norm, device = _load_model(checkpoint, device)

    def predict(samples, variant, folder):
        return _predict_saved(model, samples, out_dir, folder, tta=variant == "tta", tile_size=tile_size,
                              device=device, progress=progress)

    out, seeds, ws = {}, None, None
    if postprocessing:
        out |= {k: dict(v) for k, v in postprocessing.items()}
        seeds, ws = out.get("seed_selection"), out.get("watershed_selection")
    elif kind == "seg" and train_pairs:
        train = [load_sample(p, normalize=norm) for p in train_pairs]
        out["seed_selection"] = seeds = _seed_record(predict(train, "plain", "train"), [s.labels for s in train],
                                                     "train", min_size)
    if kind == "isbi" and membrane_watershed and ws is None:
        if not train_pairs:
            raise ValueError("membrane_watershed needs the fold's training images to choose its parameters")
        train = [load_sample(p, normalize=norm) for p in train_pairs]
        chosen, scores = choose_membrane_watershed(predict(train, "plain", "train"), [s.labels for s in train])
        out["watershed_selection"] = ws = {**chosen, "train_rand_error": scores}
    samples = [load_sample(p, normalize=norm) for p in pairs]
    for variant in variants:
        cells = _parameters_for(seeds, variant) or {}
        out[variant] = fold_metrics(kind, predict(samples, variant, variant), [s.labels for s in samples],
                                    min_size=min_size, seed_threshold=cells.get("threshold"),
                                    foreground_threshold=cells.get("foreground_threshold", 0.5),
                                    membrane_watershed=_parameters_for(ws, variant))
    return out
