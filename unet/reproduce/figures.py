"""The picture of a reproduction: one held-out image per fold, ground truth and every run side by side.

Tables say which model is better; the figure shows where. For ISBI 2012 the
interesting failures are topological (a gap in a membrane merges two cells), so
each prediction is drawn with the errors of its 0.5 binarisation coloured; for
the Cell Tracking Challenge the cells themselves are drawn, one colour each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.color import label2rgb
from skimage.segmentation import find_boundaries

from unet.data import load_sample
from unet.inference import cell_instances
from unet.io import read_image
from unet.metrics import pixel_error, rand_error, seg_score
from unet.reproduce.evaluate import prediction_path
from unet.viz import grey_rgb, pyplot, save_png

#: colours of the ISBI error overlay: membrane called cell (gaps, which merge cells), cell called membrane
GAP_RGB = (1.0, 0.15, 0.15)
SPURIOUS_RGB = (0.2, 0.55, 1.0)


def membrane_errors_rgb(prob: np.ndarray, labels: np.ndarray, *, threshold: float = 0.5) -> np.ndarray:
    """RGB float image: the cell probability in grey, the errors of ``prob > threshold`` coloured.

    Red (:data:`GAP_RGB`): ground-truth membrane predicted as cell, the error
    that merges cells and drives the Rand and warping errors. Blue
    (:data:`SPURIOUS_RGB`): cell predicted as membrane (splits, or a thicker
    membrane).
    """
    prob = np.asarray(prob, dtype=np.float64)
    cell, truth = prob > threshold, np.asarray(labels) > 0
    rgb = np.repeat(prob[..., None], 3, axis=-1)
    rgb[cell & ~truth] = GAP_RGB
    rgb[~cell & truth] = SPURIOUS_RGB
    return rgb


def instances_rgb(image: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """RGB float image: each instance in its own colour over the grey image, outlines in white."""
    rgb = label2rgb(instances, image=grey_rgb(np.asarray(image, dtype=np.float64))[..., 0], alpha=0.4, bg_label=0)
    rgb[find_boundaries(instances, mode="inner")] = 1.0
    return rgb


def _panel_score(kind: str, labels: np.ndarray, prob: np.ndarray) -> tuple[str, np.ndarray | None]:
    """The per-image score written above a prediction, and (for ``seg``) the instances it scored."""
    if kind == "isbi":
        return f"pixel {pixel_error(labels, prob):.3f}, Rand {rand_error(labels, prob):.3f}", None
    inst = cell_instances(prob)
    return f"SEG {seg_score(labels, inst):.3f}", inst


def plot_comparison(rows, *, kind: str, path, crop: int | None = 256):
    """Write one figure: a row per fold, columns image | ground truth | each run's prediction.

    Parameters
    ----------
    rows : list of dict
        ``{"title": str, "image": (H, W), "labels": (H, W), "predictions": [(label, prob), ...]}``:
        a held-out image, its ground truth (``isbi``: 0 = membrane, >0 = cell;
        ``seg``: instance ids, 0 = background) and each run's cell probability.
    kind : {"isbi", "seg"}
        ``isbi``: probabilities with the errors of their 0.5 binarisation
        coloured (:func:`membrane_errors_rgb`); ``seg``: the cells as the paper
        takes them (components of ``> 0.5``, :func:`unet.inference.cell_instances`).
    path : path
        PNG, written atomically (replaced if present).
    crop : int, optional
        ``isbi`` only: show the central ``crop`` x ``crop`` pixels so that single
        membranes stay visible (the scores are of the whole image).

    Returns
    -------
    Path
    """
    if kind not in ("isbi", "seg"):
        raise ValueError(f"kind must be 'isbi' or 'seg', not {kind!r}")
    if not rows:
        raise ValueError("no rows to plot")
    plt = pyplot()
    ncol = 2 + max(len(r["predictions"]) for r in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.6 * ncol, 3.1 * len(rows)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, row in enumerate(rows):
        _draw_row(axes[i], row, kind=kind, crop=crop)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
    return Path(path)


def _draw_row(axes, row: dict, *, kind: str, crop: int | None) -> None:
    """One row of :func:`plot_comparison`: the image, its ground truth, each run's prediction."""
    image, labels = np.asarray(row["image"], dtype=np.float64), np.asarray(row["labels"])
    view = (slice(None), slice(None))
    if kind == "isbi" and crop and min(image.shape) > crop:
        y, x = (image.shape[0] - crop) // 2, (image.shape[1] - crop) // 2
        view = (slice(y, y + crop), slice(x, x + crop))
    axes[0].imshow(grey_rgb(image[view]))
    axes[0].set_title(row["title"], fontsize=8)
    truth = (labels > 0).astype(float) if kind == "isbi" else instances_rgb(image, labels)
    axes[1].imshow(truth[view], cmap="gray", vmin=0, vmax=1)
    axes[1].set_title("ground truth", fontsize=8)
    for j, (label, prob) in enumerate(row["predictions"]):
        score, inst = _panel_score(kind, labels, np.asarray(prob))
        shown = membrane_errors_rgb(prob, labels) if kind == "isbi" else instances_rgb(image, inst)
        axes[2 + j].imshow(shown[view])
        axes[2 + j].set_title(f"{label}\n{score}", fontsize=8)


def comparison_rows(folds, run_reports, pairs_by_name, *, variant: str) -> list[dict]:
    """:func:`plot_comparison`'s rows: the middle held-out image of each fold and every run's saved
    prediction of it (``RUN/FOLD/predictions/<variant>/``). Folds with a missing prediction are left out."""
    rows = []
    for fold in folds:
        name = fold.test[len(fold.test) // 2]
        preds = []
        for run in run_reports:
            res = run["folds"].get(fold.name)
            path = prediction_path(Path(res["predictions"]).parent, variant, name) if res else None
            if path is None or not path.exists():
                break
            preds.append((run["label"], read_image(path)))
        else:
            sample = load_sample(pairs_by_name[name])
            rows.append({"title": f"{fold.name}: {name} ({variant})", "image": sample.image[0],
                         "labels": sample.labels, "predictions": preds})
    return rows
