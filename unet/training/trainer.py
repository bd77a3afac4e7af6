"""The trainer: the paper's recipe by default, exact resume, logs, plots.

A run lives in one output folder::

    OUT/config.yaml        fully resolved configuration
    OUT/last.pt            latest checkpoint (model + optimiser + scheduler + RNG + step)
    OUT/best.pt            best validation checkpoint (by ``eval.monitor``)
    OUT/log.csv            step, loss, learning rate and validation metrics
    OUT/tensorboard/       the same for TensorBoard
    OUT/curves.png         training curves (written at the end)
    OUT/overlays/*.png     validation predictions over their images (at the end)

Exact resume: training sample ``i`` is a pure function of ``(seed, i)``
(:class:`unet.data.TileDataset`), so the data-order position is the step
counter, and so is the learning-rate schedule's (:func:`make_scheduler`); the
checkpoint holds every other piece of state (weights, optimiser, torch RNG for
dropout).  A run killed at any point and restarted
with ``resume=True`` continues from its last checkpoint and ends with the same
weights as an uninterrupted run (on CPU).
"""

from __future__ import annotations

import csv
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch.optim.lr_scheduler import (ConstantLR, CosineAnnealingLR, LinearLR, LRScheduler, MultiStepLR, PolynomialLR,
                                      SequentialLR)

from tqdm.auto import tqdm

from unet.checkpoint import read_checkpoint, save_checkpoint
from unet.data import Augmentation, class_weights_from, load_sample, training_target
from unet.data.selection import config_pairs, select_pairs  # noqa: F401  (their home: unet.data.selection)
from unet.data.tiles import TileDataset, make_loader
from unet.errors import UserError, warn
from unet.scoring import metric_name, score_probabilities
from unet.inference import predict_tiled
from unet.io import atomic_path
from unet.models import create_model, freeze_encoder
from unet.models.geometry import nearest_valid_input_sizes, output_size
from unet.training.batchnorm import recalibrate_batchnorm
from unet.training.bf16 import autocast, bf16_kernels, native_cpu_bf16
from unet.training.config import KEYS_ADDED_LATER, Config, flatten_config, save_config
from unet.training.distributed import (
    DIVERGED,
    FAILED,
    GO,
    agree,
    announce_stop,
    init_distributed,
    leave,
    shutdown,
    wrap_model,
)
from unet.training.loss import IGNORE_INDEX, get_loss, skeleton_recall_loss
from unet.viz import plot_curves, plot_overlays


class _AgreedStop(UserError):
    """Every rank stops, as they agreed (nothing more to announce to the others)."""


class TrainingDiverged(_AgreedStop):
    """The loss became NaN or infinite (on any rank: every rank stops)."""


class TrainingStopped(_AgreedStop):
    """Another rank of a distributed run failed; this one stopped with it instead of waiting for it."""


_BF16_SAID = False


def warn_if_slow_bf16(amp: str, device: torch.device, *, kernels: str = "auto", remedy: str | None = None) -> bool:
    """Say (once per process) how ``train.amp: bf16`` runs on a CPU without bfloat16 kernels; True if it said so.

    By default (``train.bf16_kernels: auto``) it runs as :class:`unet.training.bf16.RoundedBF16`:
    bfloat16's rounding on float32 kernels, the same recipe at about the float32 step time, and the
    user is told once. Forced onto oneDNN's emulated kernels (``native``) it is 7-12x slower than
    float32 (scripts/BENCHMARKS.md), and the warning names the way out.
    """
    global _BF16_SAID
    if amp != "bf16" or device.type != "cpu" or _BF16_SAID or native_cpu_bf16():
        return False
    _BF16_SAID = True
    cap = torch.backends.cpu.get_cpu_capability()
    if bf16_kernels(kernels, device, native=False) == "rounded":
        warn(f"train.amp: bf16 on a CPU without bfloat16 kernels (AVX512-BF16 or AMX; this one has {cap}): it runs "
             "on float32 kernels with bfloat16's rounding (unet.training.bf16, train.bf16_kernels: auto), the same "
             "recipe at about the float32 step time (README, 'bfloat16 needs bfloat16 kernels').")
        return True
    warn(f"train.amp: bf16 with train.bf16_kernels: native on a CPU without bfloat16 kernels (AVX512-BF16 or AMX; "
         f"this one has {cap}): oneDNN emulates them, 7-12x slower than float32 where measured (README, 'bfloat16 "
         "needs bfloat16 kernels'). "
         + (remedy or "Leave train.bf16_kernels at auto (bfloat16's rounding on float32 kernels), or train in "
                      "float32 with --set train.amp=none (a different recipe: its numbers differ)."))
    return True


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: unknown device (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is available (this torch is a CPU build or has no GPU)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: there are {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"--device {name}: MPS is not available")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: unsupported device (use auto, cpu, cuda, cuda:N or mps)")
    return device


def make_scheduler(optimizer, cfg: Config, *, start: int = 0) -> LRScheduler:
    """The learning-rate schedule of ``cfg.optim`` (torch schedulers), advanced to step ``start``.

    The rate of step ``s`` (0-based) is ``optim.lr`` times: ``(s + 1) / W`` during a warm-up
    of ``W = optim.warmup_steps`` steps, then by ``optim.schedule``: ``constant`` 1; ``cosine``
    ``(1 + cos(pi t)) / 2`` and ``poly`` ``(1 - t) ** 0.9`` with ``t = (s - W) / (steps - W)``;
    ``step`` ``gamma ** (s // step_size)`` (``s`` counted from the run's start, warm-up included).

    The schedule is a function of the config and the step: a resumed run builds it anew and
    advances it to its checkpoint's step, replaying the same arithmetic as the uninterrupted run
    (exact resume; a longer ``train.steps`` stretches the schedule as it would have been).
    """
    o = cfg.optim
    for group in optimizer.param_groups:  # from the configured rate, also on a restored optimiser
        group["lr"] = group["initial_lr"] = o.lr
    main = _main_schedule(optimizer, o, after=max(1, cfg.train.steps - o.warmup_steps))
    scheduler = main
    if o.warmup_steps:
        # (s + 1) / W at step s < W; total_iters >= 1 keeps W = 1 (one step at the full rate) defined
        warmup = LinearLR(optimizer, start_factor=1 / o.warmup_steps, end_factor=1.0,
                          total_iters=max(1, o.warmup_steps - 1))
        scheduler = SequentialLR(optimizer, [warmup, main], milestones=[o.warmup_steps])
    with warnings.catch_warnings():  # no optimiser step happens while advancing, on purpose
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
        for _ in range(start):
            scheduler.step()
    return scheduler


def _main_schedule(optimizer, o, *, after: int) -> LRScheduler:
    """``optim.schedule`` after the warm-up, which lasts ``steps - after`` steps."""
    if o.schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=after)
    if o.schedule == "poly":
        return PolynomialLR(optimizer, total_iters=after, power=0.9)
    if o.schedule == "step":
        # gamma at every multiple of step_size of the whole run (warm-up included); this scheduler counts
        # from the warm-up's end, and milestones up to that point apply from there on
        return MultiStepLR(optimizer, milestones=list(range(o.step_size - o.warmup_steps, after + 1, o.step_size)),
                           gamma=o.gamma)
    return ConstantLR(optimizer, factor=1.0, total_iters=0)


def make_optimizer(params, cfg: Config):
    o = cfg.optim
    params = [p for p in params if p.requires_grad]
    if o.name == "sgd":  # paper Sec. 3: stochastic gradient descent, momentum 0.99
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


@dataclass
class _Run:
    """What the steps of one :meth:`Trainer.fit` share."""

    model: torch.nn.Module
    ddp_model: torch.nn.Module  # the model, wrapped for data parallelism when there is more than one process
    dataset: TileDataset
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    batches: Iterator[dict]
    loss_fn: Callable
    amp_dtype: Optional[torch.dtype]  # autocast to this (None: off)
    amp_kernels: str  # "native" (torch.autocast) or "rounded" (unet.training.bf16.RoundedBF16)
    scaler: torch.amp.GradScaler
    bar: tqdm
    step: int  # optimiser steps done
    best: Optional[float]  # best monitored validation value so far
    metrics: dict = field(default_factory=dict)  # of the latest validation
    t_data: float = 0.0  # seconds waiting for batches
    t_step: float = 0.0  # seconds computing
    bad_gradients: int = 0  # steps in a row whose gradient was not finite (skipped)
    skipped_steps: int = 0  # all such steps of this invocation


#: a run whose gradient is non-finite this many steps in a row stops as diverged (one is skipped)
MAX_BAD_GRADIENT_STEPS = 5


def _finite_gradients(model: torch.nn.Module) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


def _stop_workers(batches) -> None:
    """End the loader's worker processes now: persistent workers otherwise outlive the run until the
    iterator is garbage-collected, and `unet reproduce` kept one idle process per finished training."""
    stop = getattr(batches, "_shutdown_workers", None)  # torch's multi-process iterator
    if stop is not None:
        stop()


class Trainer:
    """Train a model as configured in ``cfg``, writing everything to ``out_dir``.

    Parameters
    ----------
    cfg : Config
        See :mod:`unet.training.config` and ``configs/``.
    out_dir : str or Path
        Run folder.  An existing run there is continued with ``resume=True``
        or replaced with ``overwrite=True``; otherwise it is an error.
    init_from : path, optional
        Checkpoint whose weights initialise the model (transfer learning).
    resume : bool
        Continue the run in ``out_dir`` from ``last.pt``.  ``cfg`` may differ from
        the run's saved config only in :data:`RESUMABLE` keys (e.g. more
        ``train.steps``); such changes are applied and recorded in
        ``config.yaml`` and the checkpoints.  Any other change (learning rate,
        model, loss, data, ...) is refused: the optimiser state, the weights and
        the samples already drawn follow the saved config.
    partial_init : bool
        Allow ``init_from`` to load only the tensors whose names and shapes fit
        (e.g. another number of classes); without it a checkpoint that does not
        fit the model entirely is refused.  Either way the trainer reports how
        many tensors were loaded and which were skipped.
    freeze_encoder : bool
        Train only the decoder (feature extraction) instead of fine-tuning all.
    stop_after : int, optional
        Stop (as if killed) after this many steps of this invocation; used by
        tests of resume.
    """

    def __init__(self, cfg: Config, out_dir, *, resume: bool = False, overwrite: bool = False,
                 init_from=None, freeze_encoder: bool = False, quiet: bool = False, stop_after: int | None = None,
                 partial_init: bool = False):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.quiet = quiet
        self.stop_after = stop_after
        last = self.out / "last.pt"
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"{self.out}: is a file; the run folder (--out) must be a folder")
        if last.exists() and not (resume or overwrite):
            raise UserError(f"{self.out}: already holds a training run (last.pt); pass --resume to continue it "
                            "or --overwrite to start over")
        if resume and not last.exists():
            raise UserError(f"{last}: nothing to resume (no checkpoint)")
        self.resume = resume
        self.resume_changes = resume_changes(last, cfg) if resume else {}
        self.overwrite = overwrite
        self.init_from = init_from
        self.partial_init = partial_init
        self.freeze = freeze_encoder

        threads = cfg.train.threads or os.cpu_count() or 1
        torch.set_num_threads(threads)
        self.device = pick_device(cfg.train.device)
        self.info = init_distributed(self.device.type)
        if self.device.type == "cuda" and self.info.enabled:
            self.device = torch.device("cuda", self.info.local_rank)
            torch.cuda.set_device(self.device)

        self._prepare_data()  # validates data paths before anything is written
        if self.info.is_main:
            if overwrite and self.out.exists() and not resume:
                for name in ("last.pt", "best.pt", "log.csv", "curves.png"):
                    (self.out / name).unlink(missing_ok=True)
                shutil.rmtree(self.out / "tensorboard", ignore_errors=True)
            self.out.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- data
    def _prepare_data(self):
        cfg = self.cfg
        pairs = config_pairs(cfg)
        train_pairs = select_pairs(pairs, cfg.data.train, what="train")
        val_pairs = select_pairs(pairs, cfg.data.val, what="val")
        norm = cfg.data.normalize.model_dump()
        self.train_samples = [load_sample(p, normalize=norm) for p in train_pairs]
        self.val_samples = [load_sample(p, normalize=norm) for p in val_pairs]
        self.in_channels = self.train_samples[0].image.shape[0]
        self.normalize = norm

    def _class_weights(self, targets):
        cw = self.cfg.loss.class_weights
        if cw == "auto":
            return [float(x) for x in class_weights_from(targets)]
        if cw is None:  # no class balancing: w_c = 1 for both classes
            return [1.0, 1.0]
        return [float(x) for x in cw]

    def _build_dataset(self, model):
        cfg = self.cfg
        tile = cfg.train.tile_size
        if getattr(model, "padding", "same") == "valid":
            tile = nearest_valid_input_sizes(model, tile)[1]
        out = output_size(model, tile)
        self.tile_geometry = (tile, out)
        targets = [training_target(s.labels, partial=s.partial, border=cfg.loss.separate_borders)
                   for s in self.train_samples]
        self.class_weights = self._class_weights(targets)
        aug = _augmentation(cfg)
        length = cfg.train.steps * cfg.train.batch_size * self.info.world_size
        return TileDataset(self.train_samples, input_size=tile, output_size=out, augment=aug, length=length,
                             seed=cfg.seed, w0=cfg.loss.w0 if cfg.loss.name == "weighted_ce" or cfg.loss.name == "ce_dice" else 0.0,
                             sigma=cfg.loss.sigma, class_weights=self.class_weights,
                             border=cfg.loss.separate_borders, gap_weight=cfg.loss.gap_weight,
                             gap_width=cfg.loss.gap_width, skeleton=cfg.loss.skeleton_recall > 0)

    # --------------------------------------------------------------- model
    def _build_model(self):
        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # He initialisation is drawn here
        model = create_model(cfg.model.name, **cfg.model_kwargs(in_channels=self.in_channels))
        if self.init_from:
            payload = read_checkpoint(self.init_from)
            own = model.state_dict()
            loaded = {k: v for k, v in payload["state_dict"].items() if k in own and own[k].shape == v.shape}
            skipped = [k for k in own if k not in loaded]
            if not loaded:
                raise UserError(f"{self.init_from}: no weight fits model {cfg.model.name!r} "
                                f"(checkpoint holds {payload['model']!r})")
            shown = ", ".join(skipped[:4]) + (", ..." if len(skipped) > 4 else "")
            if skipped and not self.partial_init:
                raise UserError(f"{self.init_from}: only {len(loaded)} of the {len(own)} tensors of model "
                                f"{cfg.model.name!r} fit (checkpoint: {payload['model']!r} "
                                f"{payload.get('model_kwargs', {})}; missing or other shape: {shown}); "
                                "pass --partial-init (partial_init=True) to load just those")
            model.load_state_dict(loaded, strict=False)
            self.init_report = (f"initialised {len(loaded)}/{len(own)} tensors from {self.init_from}"
                                + (f"; {len(skipped)} kept their fresh initialisation ({shown})" if skipped else ""))
        if self.freeze:
            freeze_encoder(model, True)
        return model

    # ---------------------------------------------------------------- run
    def fit(self) -> dict:
        """Train to ``cfg.train.steps``; return the final validation metrics."""
        run = self._start_run()
        try:
            metrics, stopped = self._train(run)
        except BaseException as err:
            if self.info.enabled:
                if not isinstance(err, _AgreedStop):
                    announce_stop(self.info, self.device)  # the others hear it at their next agreement
                leave(self.info)
            raise
        finally:
            run.bar.close()
            self._close_logs()
            _stop_workers(run.batches)
        if self.info.is_main and not stopped:
            self._finish(run.model, metrics)
        shutdown(self.info)
        return metrics

    def _start_run(self) -> _Run:
        """Model, optimiser, schedule and data at the run's first step (its checkpoint's, when resuming)."""
        cfg, info = self.cfg, self.info
        model = self._build_model()  # draws the initial weights from torch's global RNG
        dataset = self._build_dataset(model)
        model.to(self.device)
        if cfg.train.channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model.parameters(), cfg)
        start, best, rng_state = self._load_state(model, optimizer) if self.resume else (0, None, None)
        scheduler = make_scheduler(optimizer, cfg, start=start)
        ddp_model = wrap_model(model, info, self.device)
        b, w = cfg.train.batch_size, info.world_size
        # the resume mechanism: item i of the run is a pure function of (seed, i), step s starts at item s * w * b
        loader = make_loader(dataset, batch_size=b, num_workers=cfg.train.num_workers, start=start * w * b,
                             rank=info.rank, world_size=w, pin_memory=self.device.type == "cuda")
        batches = iter(loader)
        if rng_state is not None:  # after the loader's workers exist, so nothing else draws from it
            torch.set_rng_state(rng_state)
        if info.is_main:
            self._announce(start)
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.amp)
        # bf16 also on the CPU: oneDNN's bf16 convolutions (AVX512-BF16/AMX) take ~0.7x the fp32 step time
        # (scripts/BENCHMARKS.md); fp16 autocast has no fast CPU kernels
        use_amp = amp_dtype is not None and (self.device.type == "cuda" or amp_dtype == torch.bfloat16)
        kernels = bf16_kernels(cfg.train.bf16_kernels, self.device, native=native_cpu_bf16()) if use_amp else "native"
        if use_amp and info.is_main:
            warn_if_slow_bf16(cfg.train.amp, self.device, kernels=cfg.train.bf16_kernels)
        # disable=None: tqdm turns itself off when stderr is not a terminal (logs stay readable)
        bar = tqdm(total=cfg.train.steps, initial=start, disable=True if self.quiet or not info.is_main else None,
                   desc=f"train {cfg.experiment}", unit="step", dynamic_ncols=True, mininterval=1.0)
        return _Run(model=model, ddp_model=ddp_model, dataset=dataset, optimizer=optimizer, scheduler=scheduler,
                    batches=batches,
                    loss_fn=get_loss(cfg.loss.name), amp_dtype=amp_dtype if use_amp else None, amp_kernels=kernels,
                    scaler=torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16),
                    bar=bar, step=start, best=best)

    def _announce(self, start: int):
        """Rank 0 at the start: config.yaml, what a resume changed, the logs, how the weights were initialised."""
        if not self.resume or self.resume_changes:  # config.yaml always describes what trains
            save_config(self.cfg, self.out / "config.yaml")
        if self.resume_changes:  # shown even with --quiet (which hides the progress bar)
            print("resume with " + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in self.resume_changes.items())
                  + " (recorded in config.yaml)")
        self._open_logs(start)
        if getattr(self, "init_report", None) and not self.quiet:
            print(self.init_report)

    def _train(self, run: _Run) -> tuple[dict, bool]:
        """The steps from ``run.step`` on: (final metrics, whether ``stop_after`` stopped the run early)."""
        ran = 0
        run.model.train()
        while run.step < self.cfg.train.steps:
            if self.stop_after is not None and ran >= self.stop_after:
                return {"stopped_at": run.step}, True
            loss = self._train_step(run)
            ran += 1
            self._after_step(run, loss)
        return run.metrics, False

    def _train_step(self, run: _Run) -> float:
        """One optimiser step on the next batch; the loss."""
        cfg, device = self.cfg, self.device
        t0 = time.perf_counter()
        batch = next(run.batches)
        t1 = time.perf_counter()
        x = batch["image"].to(device, non_blocking=True)
        if cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y, w = batch["target"].to(device), batch["weight"].to(device)
        with autocast(device, run.amp_dtype, kernels=run.amp_kernels):
            logits = run.ddp_model(x)
        loss = run.loss_fn(logits.float(), y, w)  # the softmax and the weighted sum in float32 under autocast
        if cfg.loss.skeleton_recall:
            loss = loss + cfg.loss.skeleton_recall * skeleton_recall_loss(logits, batch["skeleton"].to(device))
        # all ranks learn of a divergence on any, before the gradient all-reduce that would wait for it
        codes = agree(self.info, GO if torch.isfinite(loss) else DIVERGED, device)
        if any(codes):
            self._stop(codes, run.step + 1, loss)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if run.scaler.is_enabled() or _finite_gradients(run.model):
            run.scaler.step(run.optimizer)  # float16's scaler skips a non-finite step itself
            run.scaler.update()
            run.bad_gradients = 0
        else:
            self._skip_step(run, loss)
        run.scheduler.step()
        run.step += 1
        run.t_data += t1 - t0
        run.t_step += time.perf_counter() - t1
        return loss.item()

    def _skip_step(self, run: _Run, loss) -> None:
        """A finite loss with a non-finite gradient: leave the weights as they are (as float16's GradScaler
        does), unless it keeps happening.

        PyTorch 2.13's CPU convolution backward in bfloat16 autocast now and then returns NaN in a weight
        gradient (seen on FCN-8s's 7x7 fc6 over a 2x2 pool5 of a small tile;
        scripts/probe_bf16_nan_gradient.py); one such step would otherwise turn every weight it touches into NaN.
        """
        run.bad_gradients += 1
        run.skipped_steps += 1
        step = run.step + 1
        if run.bad_gradients >= MAX_BAD_GRADIENT_STEPS:
            raise TrainingDiverged(
                f"gradient NaN or infinite in {run.bad_gradients} steps in a row up to step {step} (loss "
                f"{loss.item():.4g}); stopped without saving. {self._last_good()} (lower optim.lr, or train "
                "without train.amp).")
        if self.info.is_main:
            warn(f"{self.out}: step {step}: gradient NaN or infinite with a finite loss; step skipped, weights "
                 f"unchanged ({run.skipped_steps} skipped so far)")

    def _after_step(self, run: _Run, loss: float):
        """Progress, log row, validation (and best.pt), checkpoint, as the step number asks."""
        cfg, info, step = self.cfg, self.info, run.step
        last = step == cfg.train.steps
        if last and cfg.train.bn_recalibration_tiles:
            self._recalibrate_bn(run.model, run.dataset)
        lr = run.scheduler.get_last_lr()[0]
        run.bar.update(1)
        run.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2g}", refresh=False)
        row = {}
        if info.is_main and (step % cfg.train.log_every == 0 or last):
            row.update(loss=loss, lr=lr, data_fraction=run.t_data / max(run.t_data + run.t_step, 1e-9))
        if step % cfg.train.val_every == 0 or last:
            if info.is_main and self.val_samples:
                row.update(self._validate_step(run, loss))
            run.model.train()
        if row:
            self._log(step, row)
        if step % cfg.train.checkpoint_every == 0 or last:
            if info.is_main:
                self._save(run, self.out / "last.pt")
            codes = agree(info, GO, self.device)  # also the barrier: the others wait for the save
            if any(codes):
                self._stop(codes, step, None)

    def _validate_step(self, run: _Run, loss: float) -> dict:
        """Validate; keep the metrics, write best.pt when the monitored one improved; the log's columns."""
        cfg = self.cfg
        run.metrics = self.validate(run.model)
        value = run.metrics.get(_monitor_key(cfg.eval.monitor))
        if value is not None and _better(value, run.best, cfg.eval.mode):
            run.best = value
            self._save(run, self.out / "best.pt")
        run.bar.set_postfix(loss=f"{loss:.4f}", **{k: f"{v:.4f}" for k, v in run.metrics.items()})
        return {f"val_{k}": v for k, v in run.metrics.items()}

    def _recalibrate_bn(self, model, dataset) -> int:
        """Precise BN after the last step: running statistics over training tiles spread over the run."""
        cfg = self.cfg
        n = min(cfg.train.bn_recalibration_tiles, len(dataset))
        # the same tiles (augmentation included) the run drew, evenly spaced over its steps; every
        # process of a distributed run takes the same ones, so all end with the same statistics
        index = np.linspace(0, len(dataset) - 1, n).round().astype(int)
        b = cfg.train.batch_size

        def batches():
            for i in range(0, n, b):
                x = torch.stack([dataset[int(j)]["image"] for j in index[i : i + b]]).to(self.device)
                yield x.contiguous(memory_format=torch.channels_last) if cfg.train.channels_last else x

        seen = recalibrate_batchnorm(model, batches())
        if seen and self.info.is_main and not self.quiet:
            print(f"batch-norm statistics re-estimated over {seen} training tiles (train.bn_recalibration_tiles)")
        return seen

    def _stop(self, codes: list[int], step: int, loss):
        """Stop this rank at ``step`` after an agreement showed that some rank stops (unet.training.distributed)."""
        diverged = [r for r, c in enumerate(codes) if c == DIVERGED]
        where = f" on rank {', '.join(map(str, diverged))}" if self.info.enabled else ""
        if diverged:
            value = loss.item() if loss is not None and not torch.isfinite(loss) else "NaN or infinite"
            raise TrainingDiverged(f"loss became {value} at step {step}{where}; stopped without saving. "
                                   f"{self._last_good()} (lower optim.lr, or check the data).")
        failed = [r for r, c in enumerate(codes) if c == FAILED]
        raise TrainingStopped(f"rank {', '.join(map(str, failed))} stopped with an error at step {step} "
                              f"(see its message); rank {self.info.rank} stopped with it")

    def _last_good(self) -> str:
        """Where a diverged run can restart from: the checkpoint that exists, or none (say so)."""
        last = self.out / "last.pt"
        if not last.exists():
            return (f"No checkpoint was saved ({last} does not exist; the first is written at step "
                    f"{min(self.cfg.train.checkpoint_every, self.cfg.train.steps)})")
        try:
            saved = int(read_checkpoint(last)["step"])
        except (UserError, KeyError):
            return f"{last} is not a usable checkpoint"
        return f"The last good checkpoint is {last} (step {saved})"

    # ---------------------------------------------------------- validation
    def validate(self, model) -> dict:
        """Overlap-tile prediction of every validation image and the configured metrics."""
        ev = self.cfg.eval
        probs, gts, insts = [], [], []
        for s in self.val_samples:
            prob = predict_tiled(model, s.image if s.image.shape[0] > 1 else s.image[0], tile_size=ev.tile_size,
                                 tta=ev.tta, device=self.device)
            probs.append(prob[1])
            gts.append(training_target(s.labels, partial=s.partial, border=self.cfg.loss.separate_borders))
            insts.append(s.labels)
        self._last_val = probs
        return evaluate_predictions(probs, gts, insts, metrics=ev.metrics, min_size=ev.min_size)

    # ---------------------------------------------------------- state, logs
    def _save(self, run: _Run, path):
        extra = {
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),  # for the record: resume rebuilds it (make_scheduler)
            "step": run.step,
            "best": run.best,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }
        tile, out = self.tile_geometry
        save_checkpoint(run.model, path, extra=extra, step=run.step, experiment=self.cfg.experiment,
                        config=self.cfg.to_dict(), normalize=self.normalize, metrics=dict(run.metrics),
                        tile_size=tile, output_size=out, class_weights=self.class_weights)

    def _load_state(self, model, optimizer):
        payload = read_checkpoint(self.out / "last.pt")
        try:
            model.load_state_dict(payload["state_dict"])
        except RuntimeError:
            have = {"name": payload["model"], **payload["model_kwargs"]}
            want = {"name": self.cfg.model.name, **self.cfg.model_kwargs(in_channels=self.in_channels)}
            diff = ", ".join(f"{k} {have.get(k)!r} -> {want.get(k)!r}" for k in sorted(set(have) | set(want))
                             if have.get(k) != want.get(k))
            raise UserError(f"{self.out / 'last.pt'}: cannot resume: the config asks for another architecture "
                            f"than the run trained ({diff or 'weights differ'}); resume without changing "
                            "model.*, or start a new run (--out elsewhere)") from None
        optimizer.load_state_dict(payload["optimizer"])
        # the scheduler is not loaded: make_scheduler rebuilds it for the step (checkpoints of any version)
        if torch.cuda.is_available() and payload["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(payload["rng"]["cuda"])
        return int(payload["step"]), payload.get("best"), payload["rng"]["torch"]

    def _open_logs(self, start: int):
        """Start ``log.csv``: the rows a resumed checkpoint covers are kept (later ones were never part of
        this run's history), the header fixed; rows are then appended, not the file rewritten per row."""
        path = self.out / "log.csv"
        kept = _log_rows(path, up_to=start) if self.resume and path.exists() else []
        columns = ["step", "loss", "lr", "data_fraction"]
        if self.val_samples:
            columns += [f"val_{_monitor_key(m)}" for m in self.cfg.eval.metrics]
        self._csv_path = path
        self._columns = list(dict.fromkeys(columns + [k for r in kept for k in r]))
        self._rewrite_log(kept)
        self._tb = None
        try:  # here, not at the top: tensorboard is optional at run time (and slow to import)
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out / "tensorboard"), purge_step=start if self.resume else None)
        except ImportError:  # tensorboard is optional at run time
            pass

    def _rewrite_log(self, rows: list[dict]):
        with atomic_path(self._csv_path, overwrite=True) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self._columns)
            writer.writeheader()
            writer.writerows(rows)

    def _log(self, step: int, row: dict):
        if not self.info.is_main:
            return
        row = {"step": step, **row}
        if set(row) - set(self._columns):  # a metric the header lacks (rare): rewrite once with it
            self._columns += [k for k in row if k not in self._columns]
            self._rewrite_log(_log_rows(self._csv_path, up_to=step))
        with open(self._csv_path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self._columns).writerow(row)
        if self._tb is not None:
            for k, v in row.items():
                if k != "step":
                    self._tb.add_scalar(k, v, step)

    def _close_logs(self):
        tb = getattr(self, "_tb", None)
        if tb is not None:
            tb.close()

    def _finish(self, model, metrics):
        plot_curves(self._csv_path, self.out / "curves.png")
        if self.val_samples and self.cfg.eval.overlays:
            if not getattr(self, "_last_val", None):
                self.validate(model)
            n = min(self.cfg.eval.overlays, len(self.val_samples))
            plot_overlays([s.image for s in self.val_samples[:n]], self._last_val[:n],
                          [s.labels for s in self.val_samples[:n]], [s.name for s in self.val_samples[:n]],
                          self.out / "overlays")


#: config keys a resumed run may change: how long it trains, how often it validates, logs and
#: saves, where and how it runs, what validation reports.  Everything else shaped the weights,
#: the optimiser state or the training samples already drawn.
RESUMABLE = ("train.steps", "train.val_every", "train.checkpoint_every", "train.log_every", "train.device",
             "train.num_workers", "train.threads", "train.amp", "train.bf16_kernels", "train.channels_last", "eval.metrics",
             "eval.tta", "eval.tile_size", "eval.min_size", "eval.overlays", "data.root", "base_dir", "experiment")


def resume_changes(last: Path, cfg: Config) -> dict:
    """``{key: (saved, new)}`` for the resumable keys ``cfg`` changes; :class:`UserError` for any other change."""
    saved = flatten_config(read_checkpoint(last).get("metadata", {}).get("config") or {})
    if not saved:
        return {}
    saved = {**KEYS_ADDED_LATER, **saved}
    new = flatten_config(cfg.to_dict())
    changed = {k: (saved.get(k), v) for k, v in new.items() if saved.get(k) != v}
    refused = {k: ab for k, ab in changed.items() if k not in RESUMABLE}
    if refused:
        shown = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in list(refused.items())[:3])
        raise UserError(f"{last}: --resume cannot change {shown}{' ...' if len(refused) > 3 else ''}: the weights, "
                        "optimiser state and samples so far follow the saved config; start a new run (another "
                        "--out, or --init-from this checkpoint) instead")
    return changed


def _augmentation(cfg: Config) -> Augmentation:
    return Augmentation(**cfg.augment.model_dump())  # AugmentConfig: the config's subset of its fields


def _log_rows(path: Path, *, up_to: int) -> list[dict]:
    """Complete rows of ``log.csv`` up to step ``up_to`` (a line cut short by a kill is dropped)."""
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = csv.DictReader(text.splitlines())
    return [{k: v for k, v in r.items() if v not in ("", None)} for r in rows
            if None not in r.values() and int(r["step"]) <= up_to]


def _monitor_key(name: str) -> str:
    """The results' name of a configured metric (``pixel`` is an alias of ``pixel_error``): :func:`unet.scoring.metric_name`."""
    return metric_name(name)


def _better(value, best, mode) -> bool:
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def evaluate_predictions(probs, gts, instances=None, *, metrics=("iou", "pixel_error"), min_size: int = 0,
                         threshold: float = 0.5) -> dict:
    """Validation metrics of cell-probability maps against training targets (0 bg, 1 cell, 255 ignore).

    :func:`unet.scoring.score_probabilities` (the scoring of ``unet evaluate`` and
    ``unet reproduce``) with the targets' cells as the foreground of the pixel
    measures and their annotated pixels only in IoU and Dice; ``seg`` compares
    the cells of ``prob > threshold`` with ``instances`` (skipped without them).
    """
    if instances is None:
        metrics = [m for m in metrics if metric_name(m) != "seg"]
    return score_probabilities(probs, gts if instances is None else instances, metrics=metrics,
                               cells=[g == 1 for g in gts], valid=[g != IGNORE_INDEX for g in gts],
                               threshold=threshold, min_size=min_size)
