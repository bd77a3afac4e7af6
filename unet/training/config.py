"""Training configuration: a typed schema, YAML files, ``--set key=value`` overrides.

Defaults are the paper's recipe (Ronneberger et al. 2015); each field cites
where its value comes from.  Files under ``configs/`` override them per
experiment.  Unknown keys, wrong types and bad values raise
:class:`ConfigError` naming the key, before any training starts.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from unet.data.augment import Augmentation
from unet.data.selection import resolve_path  # noqa: F401  (config-relative data paths)
from unet.errors import ConfigError, UserError  # noqa: F401  (ConfigError: raised here, re-exported)
from unet.scoring import metric_name

_AUGMENT = Augmentation()


@dataclass
class DataConfig:
    #: manifest name: isbi2012 | dic-hela | phc-u373 | folder (see datasets/)
    dataset: str = "isbi2012"
    #: folder holding the data (relative paths: to the config file's folder, then the working dir)
    root: str = "../shared/data/isbi2012"
    #: for dataset=folder: images and masks sub-folders of ``root``
    images: str = "images"
    masks: str = "masks"
    #: training / validation images: a slice "a:b" over the sorted pairs, or a list of name patterns
    train: Union[str, list] = "0:20"
    val: Union[str, list] = "20:30"
    #: intensity normalisation (unet.data.normalize): mode, low/high percentiles
    normalize: dict = field(default_factory=lambda: {"mode": "percentile", "low": 0.1, "high": 99.9})


@dataclass
class UNetConfig:
    base_channels: int = 64  # paper Fig. 1
    depth: int = 4  # paper Fig. 1: four 2x2 max-poolings
    padding: str = "valid"  # paper Sec. 2: unpadded convolutions
    norm: Optional[str] = None  # paper: no normalisation layers
    upsampling: str = "transposed"  # paper Sec. 2: 2x2 up-convolution
    dropout: float = 0.5  # paper Sec. 3.1: drop-out at the end of the contracting path


@dataclass
class FCNConfig:
    base_channels: int = 64  # VGG-16
    fc_channels: int = 4096  # VGG-16 fc6/fc7
    dropout: float = 0.5  # VGG-16
    norm: Optional[str] = None  # VGG-16: none (VGG-16-BN: batch)


@dataclass
class ModelConfig:
    #: unet | fcn32s | fcn16s | fcn8s
    name: str = "unet"
    unet: UNetConfig = field(default_factory=UNetConfig)
    fcn: FCNConfig = field(default_factory=FCNConfig)


@dataclass
class LossConfig:
    #: weighted_ce (paper eq. 1) | ce | dice | ce_dice
    name: str = "weighted_ce"
    w0: float = 10.0  # paper Sec. 3: w0 = 10
    sigma: float = 5.0  # paper Sec. 3: sigma ~ 5 pixels
    #: "auto" (balance class frequencies over the training set, paper eq. 2 w_c), null (1, 1) or [w_bg, w_fg]
    class_weights: Union[str, list, None] = "auto"
    #: set pixels between touching cells to background (paper Sec. 3, Fig. 3c)
    separate_borders: bool = True
    #: beyond the paper (0 = off): extra weight on thin membranes (unet.data.weights.thin_membrane_weight),
    #: added to the weight map; membranes about gap_width px thick get most of it
    gap_weight: float = 0.0
    gap_width: float = 3.0


@dataclass
class AugmentConfig:
    # One source of the defaults: unet.data.augment.Augmentation (which cites the paper for each).
    elastic: bool = _AUGMENT.elastic  # paper Sec. 3.1
    elastic_grid: int = _AUGMENT.elastic_grid  # paper Sec. 3.1: coarse 3x3 grid
    elastic_sigma: float = _AUGMENT.elastic_sigma  # paper Sec. 3.1: 10 pixels standard deviation
    flips: bool = _AUGMENT.flips  # paper Sec. 3.1: shift and rotation invariance
    rot90: bool = _AUGMENT.rot90
    rotate: float = _AUGMENT.rotate  # max. degrees of a free rotation
    shift: float = _AUGMENT.shift  # extra sub-pixel shift (px); random tile positions already shift
    gray: bool = _AUGMENT.gray  # paper Sec. 3.1: gray value variations
    gray_gamma: float = _AUGMENT.gray_gamma
    gray_contrast: float = _AUGMENT.gray_contrast
    gray_brightness: float = _AUGMENT.gray_brightness


@dataclass
class OptimConfig:
    #: sgd (paper Sec. 3) | adam | adamw
    name: str = "sgd"
    #: the paper does not state a learning rate; this suits the mean-normalised loss
    lr: float = 0.001
    momentum: float = 0.99  # paper Sec. 3: high momentum (0.99)
    weight_decay: float = 0.0
    #: constant | cosine | step | poly
    schedule: str = "constant"
    warmup_steps: int = 0
    step_size: int = 1000
    gamma: float = 0.1


@dataclass
class TrainConfig:
    steps: int = 10000
    #: paper Sec. 3: "a batch of a single image", large tiles instead of large batches
    batch_size: int = 1
    #: input tile edge; for valid networks the nearest valid size >= this is used (paper: 572)
    tile_size: int = 572
    num_workers: int = 2
    val_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 10
    #: auto | cpu | cuda | mps
    device: str = "auto"
    #: none | bf16 | fp16 (autocast, GPU only)
    amp: str = "none"
    channels_last: bool = False
    threads: int = 0  # torch intra-op threads; 0 = all cores
    #: precise BN (unet.training.batchnorm): after the last step, re-estimate batch-norm running statistics
    #: over this many training tiles with the final weights (0 = off; no effect without batch norm)
    bn_recalibration_tiles: int = 0


@dataclass
class EvalConfig:
    #: metrics computed at validation: iou, dice, pixel_error, rand_error, warping_error, seg (unet.scoring)
    metrics: list = field(default_factory=lambda: ["iou", "pixel_error"])
    #: metric that selects the best checkpoint, and whether larger is better
    monitor: str = "iou"
    mode: str = "max"
    tta: bool = False
    tile_size: Optional[int] = None  # output tile for overlap-tile prediction (None: from memory budget)
    #: minimum object size (pixels) for instance labels (seg)
    min_size: int = 0
    #: save overlay PNGs of this many validation images at the end
    overlays: int = 4


@dataclass
class Config:
    experiment: str = "unnamed"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    #: folder of the config file, for resolving relative data paths
    base_dir: str = ""

    def model_kwargs(self, in_channels: int = 1, num_classes: int = 2) -> dict:
        section = self.model.unet if self.model.name == "unet" else self.model.fcn
        return {"in_channels": in_channels, "num_classes": num_classes, **dataclasses.asdict(section)}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {
    "model.name": ("unet", "fcn32s", "fcn16s", "fcn8s"),
    "model.unet.padding": ("valid", "same"),
    "model.unet.norm": (None, "none", "batch", "instance", "group"),
    "model.fcn.norm": (None, "none", "batch", "instance", "group"),
    "model.unet.upsampling": ("transposed", "bilinear"),
    "loss.name": ("weighted_ce", "ce", "dice", "ce_dice"),
    "optim.name": ("sgd", "adam", "adamw"),
    "optim.schedule": ("constant", "cosine", "step", "poly"),
    "train.device": ("auto", "cpu", "cuda", "mps"),
    "train.amp": ("none", "bf16", "fp16"),
    "eval.mode": ("max", "min"),
    "data.dataset": ("isbi2012", "dic-hela", "phc-u373", "folder"),
}
#: deepest U-Net accepted: depth 6 already has a 380 px halo (smallest input tile 828 px) and, with 64
#: base channels, 500 M parameters; each level more doubles the tile and quadruples the parameters
MAX_DEPTH = 6
POSITIVE = ("train.steps", "train.batch_size", "train.tile_size", "train.val_every", "train.checkpoint_every",
            "train.log_every", "optim.lr", "loss.sigma", "loss.gap_width", "augment.elastic_grid", "model.unet.base_channels",
            "model.unet.depth", "model.fcn.base_channels", "model.fcn.fc_channels")
NON_NEGATIVE = ("loss.w0", "loss.gap_weight", "augment.elastic_sigma", "optim.weight_decay", "optim.momentum", "train.num_workers",
                "train.threads", "train.bn_recalibration_tiles", "optim.warmup_steps", "eval.min_size", "eval.overlays", "augment.rotate",
                "augment.shift")


class _Loader(yaml.SafeLoader):
    """YAML 1.1 safe loader that also reads ``1e-4``, ``2E5``, ``.5e-3`` as floats.

    YAML 1.1 (PyYAML) requires a dot in a float, so ``lr: 1e-4`` would be the
    string ``"1e-4"``; YAML 1.2 and every user expect a number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str):
    """Parse YAML text like ``yaml.safe_load``, with scientific notation read as numbers (see :class:`_Loader`)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def _build(cls, values: dict, prefix: str, source: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {prefix or 'config'} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{source}: unknown key {path!r} (valid keys: {', '.join(sorted(names))})")
        kwargs[key] = _coerce(hints[key], value, path, source)
    return cls(**kwargs)


def _coerce(hint, value, path, source):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path + ".", source)
    origin = typing.get_origin(hint)
    options = typing.get_args(hint) if origin is Union else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{source}: {path} must not be null")
    for opt in options:
        if opt is type(None):
            continue
        if opt is bool and isinstance(value, bool):
            return value
        if opt is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if opt is int and isinstance(value, float) and value.is_integer():  # steps: 1e4
            return int(value)
        if opt is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if opt is str and isinstance(value, str):
            return value
        if opt in (list, dict) and isinstance(value, opt):
            return value
    names = "/".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"{source}: {path} must be {names}, got {value!r}")


def _validate(cfg: Config, source: str) -> Config:
    flat = flatten_config(cfg.to_dict())
    for key, choices in CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(f"{source}: {key}={flat[key]!r} is not one of {', '.join(map(str, choices))}")
    for key in POSITIVE:
        if not flat[key] > 0:
            raise ConfigError(f"{source}: {key} must be > 0, got {flat[key]!r}")
    for key in NON_NEGATIVE:
        if flat[key] < 0:
            raise ConfigError(f"{source}: {key} must be >= 0, got {flat[key]!r}")
    if cfg.model.unet.depth > MAX_DEPTH:
        raise ConfigError(f"{source}: model.unet.depth must be <= {MAX_DEPTH}, got {cfg.model.unet.depth} (paper: 4; "
                          "depth 7 needs input tiles of at least 1660 px and, with 64 base channels, 2 billion "
                          "parameters)")
    if not 0 <= cfg.model.unet.dropout < 1 or not 0 <= cfg.model.fcn.dropout < 1:
        raise ConfigError(f"{source}: dropout must be in [0, 1)")
    _check_eval_metrics(cfg.eval, source)
    cw = cfg.loss.class_weights
    if isinstance(cw, str) and cw != "auto" or isinstance(cw, list) and (len(cw) != 2 or min(cw) < 0):
        raise ConfigError(f"{source}: loss.class_weights must be 'auto', null or [w_background, w_cell]")
    return cfg


def _check_eval_metrics(ev, source: str) -> None:
    """Known metric names (:func:`unet.scoring.metric_name`: ``pixel`` is an alias of ``pixel_error``), and
    ``eval.monitor`` among ``eval.metrics``: else no validation would report it and ``best.pt`` never be written."""
    try:
        computed = [metric_name(m) for m in ev.metrics]
    except ValueError as err:
        raise ConfigError(f"{source}: eval.metrics: {err}") from None
    try:
        monitor = metric_name(ev.monitor)
    except ValueError as err:
        raise ConfigError(f"{source}: eval.monitor: {err}") from None
    if monitor not in computed:
        raise ConfigError(f"{source}: eval.monitor={ev.monitor!r} is not among eval.metrics "
                          f"[{', '.join(ev.metrics)}], so best.pt would never be written: add it there or "
                          "monitor one of them")


def flatten_config(d: dict, prefix: str = "") -> dict:
    """``{"train": {"steps": 5}}`` -> ``{"train.steps": 5}`` (the normalisation settings stay one value)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "normalize":
            out.update(flatten_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _set(tree: dict, dotted: str, value, source: str):
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: cannot set {dotted!r}: {k!r} is not a section")
    node[keys[-1]] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """``["train.steps=100", "loss.w0=0"]`` -> ``[("train.steps", 100), ("loss.w0", 0)]`` (values parsed as YAML)."""
    out = []
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.steps=1000")
        key, raw = item.split("=", 1)
        try:
            value = load_yaml(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({problem})") from None
        out.append((key.strip(), value))
    return out


def load_config(path=None, *, overrides: list[str] | None = None, extra: dict | None = None) -> Config:
    """Read a YAML config (or start from the defaults), apply overrides, validate.

    Parameters
    ----------
    path : str or Path, optional
        YAML file; keys it omits keep the schema defaults.
    overrides : list of str
        ``key=value`` strings (``--set``), applied last.
    extra : dict
        Flat ``{dotted.key: value}`` applied before ``overrides``.
    """
    tree: dict = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            tree = load_yaml(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML ({err})") from err
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: a config is a mapping of sections (data:, model:, train:, ...), "
                              f"this file holds a {type(tree).__name__}")
        tree.setdefault("base_dir", str(path.resolve().parent))
    for key, value in (extra or {}).items():
        _set(tree, key, value, source)
    for key, value in parse_overrides(overrides):
        _set(tree, key, value, f"--set {key}")
    cfg = _build(Config, tree, "", source)
    return _validate(cfg, source)


def save_config(cfg: Config, path, *, overwrite: bool = True) -> Path:
    from unet.io import write_text_atomic

    text = "# fully resolved configuration of this run (unet train)\n" + yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    return write_text_atomic(path, text, overwrite=overwrite)
