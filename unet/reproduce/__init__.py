"""Reproduce the paper's tables: ISBI 2012 (Table 1) and the Cell Tracking Challenge (Table 2).

An *experiment* (``configs/reproduce/NAME.yaml``, :func:`load_experiment`)
names a base training config, the *runs* (model variants: U-Net, U-Net without
the border term, FCN-8s), the *folds* (which images train and which test),
the evaluation, the paper's numbers and the targets.  :func:`run_experiment`
trains every run on every fold (resumable), predicts each held-out fold once
from the last checkpoint with overlap-tile inference, computes the challenge
measures and writes ``report.md`` + ``report.json`` (:mod:`unet.reproduce.report`).

Protocol (never tune on the test fold): inside a fold the trainer gets no
validation set (``data.val: none``), so nothing measured on held-out images can
select a checkpoint, a step count or a threshold; the reported numbers are
computed once, at the end, from ``last.pt``.  :func:`check_no_leak` enforces it.

Names are loaded lazily (``lazy_loader``): ``unet reproduce --list`` reads the experiment files
without importing torch, which the runner needs (it trains).
"""

from __future__ import annotations

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "experiment": ["EXPERIMENT_DIR", "Experiment", "Run", "list_experiments", "load_experiment"],
    "folds": ["Fold", "check_no_leak", "contiguous_folds", "resolve_folds"],
    "evaluate": ["evaluate_fold", "fold_metrics", "choose_seed_threshold", "choose_cell_watershed", "choose_membrane_watershed",
                 "choose_postprocessing"],
    "report": ["check_targets", "render_markdown", "summarize", "write_report"],
    "runner": ["run_experiment"],
})
