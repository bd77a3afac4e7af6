"""Pictures: training curves, predictions over their images, and the helpers of report figures.

The trainer (curves and overlays of a run) and :mod:`unet.reproduce.figures`
(the comparison figure of a reproduction) draw with these; matplotlib is
imported (and its Agg backend chosen) only when a figure is drawn, and files are written atomically.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import skimage.io
from skimage.segmentation import find_boundaries

from unet.io import atomic_path


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend (no display needed)."""
    # imported here, not at the top: choosing the backend is process-wide, so it happens when a
    # figure is drawn, not when an interactive session merely imports unet.viz
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path):
    """Write ``fig`` as a PNG to ``path`` atomically, replacing an older picture."""
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def plot_curves(csv_path, png_path) -> Path | None:
    """Loss (log scale) and every validation metric against the step."""
    csv_path = Path(csv_path)
    if not csv_path.exists():
        return None
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    plt = pyplot()
    val_keys = sorted({k for r in rows for k in r if k.startswith("val_") and r[k] not in ("", None)})
    fig, axes = plt.subplots(1, 1 + bool(val_keys), figsize=(5 + 5 * bool(val_keys), 3.6), squeeze=False)
    steps = [int(r["step"]) for r in rows if r.get("loss")]
    loss = [float(r["loss"]) for r in rows if r.get("loss")]
    ax = axes[0, 0]
    ax.plot(steps, loss, lw=1)
    if len(loss) >= 10:  # a running mean shows the trend through the noise of single tiles
        k = max(5, len(loss) // 20)
        ax.plot(steps[k - 1:], np.convolve(loss, np.ones(k) / k, mode="valid"), lw=2, label=f"mean of {k}")
        ax.legend()
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title("training loss")
    if val_keys:
        ax = axes[0, 1]
        for k in val_keys:
            pts = [(int(r["step"]), float(r[k])) for r in rows if r.get(k) not in ("", None)]
            ax.plot(*zip(*pts), marker="o", ms=3, label=k[4:])
        ax.set_xlabel("step")
        ax.set_title("validation")
        ax.legend()
    fig.tight_layout()
    save_png(fig, png_path)
    plt.close(fig)
    return Path(png_path)


def grey_rgb(image: np.ndarray) -> np.ndarray:
    """RGB float in [0, 1]: a 2-D image in grey, its 0.5/99.5 percentiles stretched to black and white."""
    lo, hi = np.percentile(image, [0.5, 99.5])
    g = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.stack([g, g, g], -1)


def overlay_rgb(image: np.ndarray, prob: np.ndarray, labels: np.ndarray | None = None,
                threshold: float = 0.5) -> np.ndarray:
    """RGB uint8: the image in grey, predicted foreground tinted, its outline in yellow, the truth's in cyan."""
    rgb = grey_rgb(image[0] if image.ndim == 3 else image)
    fg = prob > threshold
    rgb[fg] = 0.65 * rgb[fg] + 0.35 * np.array([1.0, 0.2, 0.2])
    rgb[find_boundaries(fg, mode="inner")] = (1.0, 1.0, 0.0)
    if labels is not None:
        rgb[find_boundaries(labels, mode="inner")] = (0.0, 1.0, 1.0)
    return (rgb * 255).astype(np.uint8)


def plot_overlays(images, probs, labels, names, out_dir) -> list[Path]:
    """One PNG per image: prediction (red, yellow outline) and ground truth (cyan outline) over the image."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for img, p, lab, name in zip(images, probs, labels, names):
        path = out_dir / f"{str(name).replace('/', '_')}.png"
        with atomic_path(path, overwrite=True) as tmp:
            skimage.io.imsave(tmp, overlay_rgb(img, p, lab), check_contrast=False)
        paths.append(path)
    return paths
