"""Shared fixtures.

Every feature is tested on data shipped in the repository: the ISBI 2012 sample of the demo
(``unet/sample_data/isbi2012``), crops of DIC-HeLa and a subset of the metric golden vectors
(``tests/fixtures``, see PROVENANCE.md there).  The full real data and golden vectors in
``../shared`` beside the repository add more cases when present; tests that need the whole of it
skip without it, unless ``UNET_REQUIRE_SHARED=1`` (set by ``.ci/run``) turns that into a failure.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import skimage.io
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = REPO / "tests" / "fixtures"
SAMPLE = REPO / "unet" / "sample_data"
#: CI always has ../shared: a missing folder must fail there, not skip
REQUIRE_SHARED = os.environ.get("UNET_REQUIRE_SHARED", "") not in ("", "0")
#: data sources of the real-data tests: the shipped fixtures always, ../shared when present
SOURCES = ["shipped"] + (["shared"] if (SHARED / "data").is_dir() or REQUIRE_SHARED else [])

# 2-core machines: keep intra-op threads low so parallel processes do not thrash.
torch.set_num_threads(2)


def shared_path(*parts: str) -> Path:
    """``../shared/PARTS``; skips the test when absent (fails under ``UNET_REQUIRE_SHARED=1``)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{path} is not present (the full real data; the shipped fixtures cover the feature)"
        if REQUIRE_SHARED:
            pytest.fail(message + " but UNET_REQUIRE_SHARED is set", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (all of ISBI 2012 and DIC-HeLa), or skip when it is absent."""
    return shared_path("data")


@pytest.fixture(scope="session", params=SOURCES)
def dic_hela(request) -> Path:
    """A DIC-HeLa folder (01/, 02/ with images/ and masks/): the shipped 256x256 crops of five
    frames, and the whole ``../shared/data/dic-hela`` when present."""
    if request.param == "shared":
        return shared_path("data", "dic-hela")
    return FIXTURES / "dic-hela"


@pytest.fixture(scope="session")
def dic_hela_crops() -> Path:
    """The shipped DIC-HeLa crops only: 01/t002, 01/t021, 01/t067 (partial), 02/t006, 02/t014."""
    return FIXTURES / "dic-hela"


@pytest.fixture(scope="session", params=SOURCES)
def isbi2012(request) -> Path:
    """An ISBI 2012 folder (train/images, train/labels): the 10 slices shipped with the demo, and
    all 30 of ``../shared/data/isbi2012`` when present."""
    if request.param == "shared":
        return shared_path("data", "isbi2012")
    return SAMPLE / "isbi2012"


@pytest.fixture(scope="session")
def isbi_crops(tmp_path_factory):
    """``isbi_crops(name, n, crop)``: a folder dataset of the first ``n`` (<= 8) real ISBI 2012
    slices of the shipped sample cut to ``crop`` (a pair of slices), as images/sN.png and
    masks/sN.png in a fresh temporary folder."""

    def make(name: str, n: int, crop: tuple[slice, slice]) -> Path:
        assert n <= 8, "the shipped sample holds slices 0-7 (and 28, 29)"
        root = tmp_path_factory.mktemp(name)
        for sub, src in (("images", "images"), ("masks", "labels")):
            (root / sub).mkdir()
            for i in range(n):
                arr = skimage.io.imread(SAMPLE / "isbi2012/train" / src / f"{i}.png")
                skimage.io.imsave(root / sub / f"s{i}.png", np.ascontiguousarray(arr[crop]), check_contrast=False)
        return root

    return make


class ReferenceMetrics:
    """Independent, plain NumPy/SciPy implementations of the measures' published definitions
    (tests/fixtures/oracle/PROVENANCE.md), for expectations that do not come from ``unet.metrics``.
    Checked against the golden vectors in tests/metrics/test_reference_metrics.py."""

    #: the challenge script's ``th = 0; th <= 1; th += 0.1`` in double precision
    THRESHOLDS = tuple(np.cumsum([0.0] + [0.1] * 10))

    @staticmethod
    def _slices(labels, proposal):
        # the official tool reads the proposal as a 32-bit image, then compares float64(P) > th
        labels, proposal = np.asarray(labels), np.asarray(proposal, dtype=np.float32).astype(np.float64)
        return (labels[None], proposal[None]) if labels.ndim == 2 else (labels, proposal)

    @classmethod
    def pixel_error(cls, labels, proposal):
        labels, proposal = cls._slices(labels, proposal)
        best = 0.0
        for th in cls.THRESHOLDS:
            cell, pred = labels > 0, proposal > th
            tp, fp, fn = np.sum(cell & pred), np.sum(~cell & pred), np.sum(cell & ~pred)
            p = 1.0 if fp == 0 else tp / (tp + fp)
            r = 1.0 if fn == 0 else tp / (tp + fn)
            best = max(best, 0.0 if p + r == 0 else 2 * p * r / (p + r))
        return 1.0 - best

    @classmethod
    def rand_error(cls, labels, proposal):
        import scipy.ndimage as ndi

        labels, proposal = cls._slices(labels, proposal)
        best = 0.0
        for th in cls.THRESHOLDS:
            T = A = B = 0.0
            for lab, prob in zip(labels, proposal):
                gt, _ = ndi.label(lab > th)  # 4-connected
                pr, _ = ndi.label(prob > th)
                inside = gt > 0  # ground-truth membrane is ignored
                i, j = gt[inside].astype(np.int64), pr[inside].astype(np.int64)
                pairs, n = np.unique(np.stack([i, j]), axis=1, return_counts=True)
                n = n.astype(np.float64)
                on_membrane = pairs[1] == 0  # proposal-membrane pixels count as singletons
                T += np.sum(n[~on_membrane] ** 2) + np.sum(n[on_membrane])
                A += np.sum(np.bincount(i, minlength=1).astype(np.float64) ** 2)
                B += np.sum(np.bincount(j[j > 0]).astype(np.float64) ** 2) + np.sum(n[on_membrane])
            if A + B > 0:
                best = max(best, 2 * T / (A + B))
        return 1.0 - best

    @staticmethod
    def iou(a, b):
        a, b = np.asarray(a, bool), np.asarray(b, bool)
        union = np.sum(a | b)
        return 1.0 if union == 0 else float(np.sum(a & b) / union)

    @staticmethod
    def seg(gt, res):
        """Mean Jaccard over all ground-truth objects of all frames (axis 0), matched to the result
        object covering more than half of them."""
        gt, res = np.asarray(gt), np.asarray(res)
        if gt.ndim == 2:
            gt, res = gt[None], res[None]
        scores = []
        for g_frame, r_frame in zip(gt, res):
            for label in np.unique(g_frame)[1:]:
                obj = g_frame == label
                ids, counts = np.unique(r_frame[obj], return_counts=True)
                match = [k for k, c in zip(ids, counts) if k != 0 and c > 0.5 * obj.sum()]
                scores.append(np.sum(obj & (r_frame == match[0])) / np.sum(obj | (r_frame == match[0]))
                              if match else 0.0)
        return float(np.mean(scores))


@pytest.fixture(scope="session")
def reference() -> ReferenceMetrics:
    """:class:`ReferenceMetrics`: the measures computed independently of ``unet.metrics``."""
    return ReferenceMetrics()
