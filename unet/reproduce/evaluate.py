"""Predict a held-out fold once from the final checkpoint, save it, and score the saved files.

The numbers of a report are computed from the probability maps *as written
to disk* (``predictions/<variant>/<image>.tif``, float32 cell probability), so
anyone can recompute them with :func:`fold_metrics` or ``unet evaluate``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unet.reproduce.experiment import METRICS


def instance_labels(prob: np.ndarray, *, threshold: float = 0.5, min_size: int = 0) -> np.ndarray:
    """Cells of a probability map: 4-connected components of ``prob > threshold``.

    The paper's loss puts background between touching cells (Sec. 3, Fig. 3),
    so components of the thresholded map are the cell instances, as in the
    trainer's SEG validation (:func:`unet.training.trainer.evaluate_predictions`).
    """
    from skimage.measure import label
    from skimage.morphology import remove_small_objects

    lab = label(np.asarray(prob) > threshold, connectivity=1)
    if min_size > 0:
        lab = label(remove_small_objects(lab, min_size) > 0, connectivity=1)
    return lab.astype(np.int32)


def prediction_path(out_dir, variant: str, name: str) -> Path:
    return Path(out_dir) / "predictions" / variant / (str(name).replace("/", "_") + ".tif")


def fold_metrics(kind: str, probs, labels, *, min_size: int = 0) -> dict:
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
    """
    from unet import metrics as M

    probs = [np.asarray(p, np.float64) for p in probs]
    labels = [np.asarray(g) for g in labels]
    if kind == "isbi":
        gt = np.stack([((g > 0) * 255).astype(np.uint8) for g in labels])
        r = M.isbi_errors(gt, np.stack(probs))
        return {k: float(r[k]) for k in METRICS["isbi"]} | {
            "pixel_threshold": r["pixel_threshold"], "rand_threshold": r["rand_threshold"],
            "warping_threshold": r["warping_threshold"]}
    if kind == "seg":
        preds = [instance_labels(p, min_size=min_size) for p in probs]
        if len({g.shape for g in labels}) == 1:
            return {"seg": float(M.seg_score(np.stack(labels), np.stack(preds)))}
        # frames of different sizes: pool the per-object Jaccard indices by hand, exactly as seg_score does
        jac = [j for g, r in zip(labels, preds) for _, _, j in M.seg_jaccards(g[None], r[None])]
        return {"seg": float(sum(jac) / len(jac))}
    raise ValueError(f"unknown evaluation kind {kind!r}")


def evaluate_fold(checkpoint, pairs, out_dir, *, kind: str, variants=("plain",), tile_size=None, device=None,
                  min_size: int = 0, progress: bool = False) -> dict:
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

    Returns
    -------
    dict
        ``{variant: {metric: value}}``.
    """
    import torch

    from unet.checkpoint import load_checkpoint
    from unet.data import load_sample
    from unet.inference import predict_tiled
    from unet.io import read_image, write_image

    device = torch.device(device or "cpu")
    model, meta = load_checkpoint(checkpoint, map_location=device, with_metadata=True)
    from unet.data import DEFAULT_NORMALIZE

    # the checkpoint's own normalisation (as in training); the package default for older checkpoints
    samples = [load_sample(p, normalize=meta.get("normalize") or DEFAULT_NORMALIZE) for p in pairs]
    out = {}
    for variant in variants:
        probs = []
        for s in samples:
            img = s.image[0] if s.image.shape[0] == 1 else s.image
            prob = predict_tiled(model, img, tile_size=tile_size, tta=variant == "tta", device=device,
                                 progress=progress)[1].astype(np.float32)
            path = prediction_path(out_dir, variant, s.name)
            write_image(path, prob, overwrite=True)
            probs.append(read_image(path))  # score what was saved
        out[variant] = fold_metrics(kind, probs, [s.labels for s in samples], min_size=min_size)
    return out
