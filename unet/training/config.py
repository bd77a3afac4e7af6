"""Training configuration: a declarative schema (pydantic), YAML files, ``--set key=value`` overrides.

Defaults are the paper's recipe (Ronneberger et al. 2015); each field cites
where its value comes from.  Files under ``configs/`` override them per
experiment.  Unknown keys, wrong types and bad values raise one
:class:`ConfigError` naming every offending key, before any training starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo,
                      field_validator, model_serializer, model_validator)

from unet.data.augment import Augmentation
from unet.data.normalize import DEFAULT_NORMALIZE
from unet.data.selection import resolve_path  # noqa: F401  (config-relative data paths)
from unet.errors import ConfigError, UserError  # noqa: F401  (ConfigError: raised here, re-exported)
from unet.scoring import metric_name
from unet.io import write_text_atomic

_AUGMENT = Augmentation()
#: deepest U-Net accepted: depth 6 already has a 380 px halo (smallest input tile 828 px) and, with 64
#: base channels, 500 M parameters; each level more doubles the tile and quadruples the parameters
MAX_DEPTH = 6
#: said after any problem with these keys
_HINTS = {"model.unet.depth": "paper: 4; depth 7 needs input tiles of at least 1660 px and, with 64 base "
                              "channels, 2 billion parameters"}


def _whole_number(value):
    """YAML reads ``steps: 1e4`` as the float 10000.0: a whole float is accepted where an int is due."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


#: an int, also written as a whole float (``2e3``); never a bool or a string
Int = Annotated[int, BeforeValidator(_whole_number)]
Norm = Optional[Literal["none", "batch", "instance", "group"]]


class _Section(BaseModel):
    # strict: no silent conversions ("5" is not 5, true is not 1); floats still take ints
    model_config = ConfigDict(extra="forbid", strict=True)


class NormalizeConfig(_Section):
    """Intensity normalisation: the keyword arguments of :func:`unet.data.normalize.normalize`."""

    #: percentile | meanstd | minmax | dtype | none (see unet.data.normalize.intensity_range)
    mode: Literal["percentile", "meanstd", "minmax", "dtype", "none"] = "percentile"
    #: mode percentile: grey-value percentiles mapped to 0 and 1
    low: float = Field(0.1, ge=0, le=100)
    high: float = Field(99.9, ge=0, le=100)

    @model_validator(mode="after")
    def _low_below_high(self):
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self

    @model_serializer(mode="wrap")
    def _as_given(self, handler) -> dict:
        # only the settings the config gives, as config.yaml and checkpoints have always stored them
        # (a resumed run compares them); unet.data.normalize supplies the others
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}


class DataConfig(_Section):
    #: manifest name: isbi2012 | dic-hela | phc-u373 | folder (see datasets/)
    dataset: Literal["isbi2012", "dic-hela", "phc-u373", "folder"] = "isbi2012"
    #: folder holding the data (relative paths: to the config file's folder, then the working dir)
    root: str = "../shared/data/isbi2012"
    #: for dataset=folder: images and masks sub-folders of ``root``
    images: str = "images"
    masks: str = "masks"
    #: training / validation images: a slice "a:b" over the sorted pairs, or a list of name patterns
    train: Union[str, list[Union[str, int]]] = "0:20"
    val: Union[str, list[Union[str, int]]] = "20:30"
    #: intensity normalisation (unet.data.normalize): mode, low/high percentiles
    normalize: NormalizeConfig = Field(default_factory=lambda: NormalizeConfig(**DEFAULT_NORMALIZE))


class UNetConfig(_Section):
    base_channels: Int = Field(64, gt=0)  # paper Fig. 1
    depth: Int = Field(4, gt=0, le=MAX_DEPTH)  # paper Fig. 1: four 2x2 max-poolings
    padding: Literal["valid", "same"] = "valid"  # paper Sec. 2: unpadded convolutions
    norm: Norm = None  # paper: no normalisation layers
    upsampling: Literal["transposed", "bilinear"] = "transposed"  # paper Sec. 2: 2x2 up-convolution
    dropout: float = Field(0.5, ge=0, lt=1)  # paper Sec. 3.1: drop-out at the end of the contracting path


class FCNConfig(_Section):
    base_channels: Int = Field(64, gt=0)  # VGG-16
    fc_channels: Int = Field(4096, gt=0)  # VGG-16 fc6/fc7
    dropout: float = Field(0.5, ge=0, lt=1)  # VGG-16
    norm: Norm = None  # VGG-16: none (VGG-16-BN: batch)


class ModelConfig(_Section):
    name: Literal["unet", "fcn32s", "fcn16s", "fcn8s"] = "unet"
    unet: UNetConfig = Field(default_factory=UNetConfig)
    fcn: FCNConfig = Field(default_factory=FCNConfig)


class LossConfig(_Section):
    #: weighted_ce (paper eq. 1) | ce | dice | ce_dice
    name: Literal["weighted_ce", "ce", "dice", "ce_dice"] = "weighted_ce"
    w0: float = Field(10.0, ge=0)  # paper Sec. 3: w0 = 10
    sigma: float = Field(5.0, gt=0)  # paper Sec. 3: sigma ~ 5 pixels
    #: "auto" (balance class frequencies over the training set, paper eq. 2 w_c), null (1, 1) or [w_bg, w_fg]
    class_weights: Union[Literal["auto"], list[float], None] = "auto"
    #: set pixels between touching cells to background (paper Sec. 3, Fig. 3c)
    separate_borders: bool = True
    #: beyond the paper (0 = off): extra weight on thin membranes (unet.data.weights.thin_membrane_weight),
    #: added to the weight map; membranes about gap_width px thick get most of it
    gap_weight: float = Field(0.0, ge=0)
    gap_width: float = Field(3.0, gt=0)
    #: beyond the paper (0 = off): weight of the skeleton recall term (unet.training.loss.skeleton_recall_loss,
    #: Kirchhoff et al. 2024) added to the pixel-wise loss; the recall of the membranes' centre lines
    skeleton_recall: float = Field(0.0, ge=0)

    @field_validator("class_weights", mode="before")
    @classmethod
    def _two_weights(cls, value):
        pair = isinstance(value, list) and len(value) == 2 and all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in value)
        if value is None or value == "auto" or pair:
            return value
        raise ValueError(f"must be 'auto', null or [w_background, w_cell] (two numbers >= 0), got {value!r}")


#: keys added after checkpoints were saved, with the value those checkpoints had implicitly: a saved
#: config without one reads as having it (resume checks, reproduce's config keys)
KEYS_ADDED_LATER = {"augment.scale": 0.0, "loss.skeleton_recall": 0.0, "train.bf16_kernels": "auto"}


class AugmentConfig(_Section):
    # One source of the defaults: unet.data.augment.Augmentation (which cites the paper for each).
    elastic: bool = _AUGMENT.elastic  # paper Sec. 3.1
    elastic_grid: Int = Field(_AUGMENT.elastic_grid, gt=0)  # paper Sec. 3.1: coarse 3x3 grid
    elastic_sigma: float = Field(_AUGMENT.elastic_sigma, ge=0)  # paper Sec. 3.1: 10 pixels standard deviation
    flips: bool = _AUGMENT.flips  # paper Sec. 3.1: shift and rotation invariance
    rot90: bool = _AUGMENT.rot90
    rotate: float = Field(_AUGMENT.rotate, ge=0)  # max. degrees of a free rotation
    shift: float = Field(_AUGMENT.shift, ge=0)  # extra sub-pixel shift (px); random tile positions already shift
    scale: float = Field(_AUGMENT.scale, ge=0, lt=1)  # zoom in [1 - scale, 1 + scale]; not in the paper (0 = off)
    gray: bool = _AUGMENT.gray  # paper Sec. 3.1: gray value variations
    gray_gamma: float = _AUGMENT.gray_gamma
    gray_contrast: float = _AUGMENT.gray_contrast
    gray_brightness: float = _AUGMENT.gray_brightness


class OptimConfig(_Section):
    #: sgd (paper Sec. 3) | adam | adamw
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    #: the paper does not state a learning rate; this suits the mean-normalised loss
    lr: float = Field(0.001, gt=0)
    momentum: float = Field(0.99, ge=0)  # paper Sec. 3: high momentum (0.99)
    weight_decay: float = Field(0.0, ge=0)
    #: constant | cosine | step | poly (unet.training.trainer.make_scheduler)
    schedule: Literal["constant", "cosine", "step", "poly"] = "constant"
    warmup_steps: Int = Field(0, ge=0)
    step_size: Int = Field(1000, gt=0)
    gamma: float = 0.1


class TrainConfig(_Section):
    steps: Int = Field(10000, gt=0)
    #: paper Sec. 3: "a batch of a single image", large tiles instead of large batches
    batch_size: Int = Field(1, gt=0)
    #: input tile edge; for valid networks the nearest valid size >= this is used (paper: 572)
    tile_size: Int = Field(572, gt=0)
    num_workers: Int = Field(2, ge=0)
    val_every: Int = Field(500, gt=0)
    checkpoint_every: Int = Field(500, gt=0)
    log_every: Int = Field(10, gt=0)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    #: none | bf16 | fp16: mixed precision (autocast of the forward pass; weights, loss and optimiser stay
    #: float32); bf16 on CPU and GPU, fp16 on GPU only. Prediction always runs in float32.
    amp: Literal["none", "bf16", "fp16"] = "none"
    #: how bf16 runs on a CPU: auto = oneDNN's bfloat16 kernels where the CPU has them (AVX512-BF16, AMX),
    #: else float32 kernels with bfloat16's rounding (unet.training.bf16: the float32 step time, not 7-12x it);
    #: native / rounded force one. Not part of the recipe: both round where autocast does.
    bf16_kernels: Literal["auto", "native", "rounded"] = "auto"
    channels_last: bool = False
    threads: Int = Field(0, ge=0)  # torch intra-op threads; 0 = all cores
    #: precise BN (unet.training.batchnorm): after the last step, re-estimate batch-norm running statistics
    #: over this many training tiles with the final weights (0 = off; no effect without batch norm)
    bn_recalibration_tiles: Int = Field(0, ge=0)


class EvalConfig(_Section):
    #: metrics computed at validation: iou, dice, pixel_error, rand_error, warping_error, seg (unet.scoring;
    #: the older pixel, rand, warping are deprecated aliases)
    metrics: list[str] = Field(default_factory=lambda: ["iou", "pixel_error"])
    #: metric that selects the best checkpoint (one of ``metrics``), and whether larger is better
    monitor: str = "iou"
    mode: Literal["max", "min"] = "max"
    tta: bool = False
    tile_size: Optional[Int] = None  # output tile for overlap-tile prediction (None: from memory budget)
    #: minimum object size (pixels) for instance labels (seg)
    min_size: Int = Field(0, ge=0)
    #: save overlay PNGs of this many validation images at the end
    overlays: Int = Field(4, ge=0)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str]) -> list[str]:
        for m in metrics:
            metric_name(m)  # ValueError naming the choices (aliases: unet.scoring)
        return metrics

    @field_validator("monitor")
    @classmethod
    def _monitor_is_one_of_the_metrics(cls, monitor: str, info: ValidationInfo) -> str:
        # a monitor that validation never computes would silently never write best.pt
        metrics = info.data.get("metrics")  # absent when eval.metrics itself is invalid (reported already)
        if metrics is not None and metric_name(monitor) not in {metric_name(m) for m in metrics}:
            raise ValueError(f"eval.monitor={monitor!r} is not among eval.metrics [{', '.join(metrics)}], so best.pt "
                             "would never be written: add it there or monitor one of them")
        return monitor


class Config(_Section):
    experiment: str = "unnamed"
    seed: Int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    #: folder of the config file, for resolving relative data paths
    base_dir: str = ""

    def model_kwargs(self, in_channels: int = 1, num_classes: int = 2) -> dict:
        section = self.model.unet if self.model.name == "unet" else self.model.fcn
        return {"in_channels": in_channels, "num_classes": num_classes, **section.model_dump()}

    def to_dict(self) -> dict:
        return self.model_dump()


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


def validate_config(tree: dict, source: str = "defaults") -> Config:
    """The :class:`Config` of a nested mapping; :class:`ConfigError` listing every problem, each naming its key."""
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(f"{source}: " + "; ".join(_problems(err))) from None


def _problems(err: ValidationError) -> list[str]:
    """One phrase per offending key; the alternatives of a union (``str or list``) merge into one."""
    expected: dict[str, list[str]] = {}  # key -> the types it may have, for wrong-type errors
    phrases: dict[str, str] = {}
    for e in err.errors():
        key, section = _locate(e["loc"])
        kind, ctx, value = e["type"], e.get("ctx") or {}, e.get("input")
        if kind == "extra_forbidden":
            phrases[key] = f"unknown key {key!r} (valid keys: {', '.join(sorted(section.model_fields))})"
        elif kind.endswith(("_type", "_parsing", "_from_float")):
            expected.setdefault(key, []).append(_TYPE_NAMES.get(kind.split("_")[0], kind.split("_")[0]))
            phrases[key] = f"{key} must be {' or '.join(dict.fromkeys(expected[key]))}, got {value!r}"
        elif kind in _BOUNDS:
            op, bound = _BOUNDS[kind]
            phrases[key] = f"{key} must be {op} {ctx[bound]}, got {value!r}"
        elif kind == "literal_error":
            phrases[key] = f"{key}={value!r} is not one of {ctx['expected']}"
        elif kind == "value_error":
            phrases[key] = f"{key}: {ctx['error']}"
        else:
            phrases[key] = f"{key}: {e['msg']}"
    return [f"{p} ({_HINTS[k]})" if k in _HINTS else p for k, p in phrases.items()]


_TYPE_NAMES = {"string": "str", "dict": "a mapping", "model": "a mapping"}
_BOUNDS = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
           "less_than_equal": ("<=", "le")}


def _locate(loc: tuple) -> tuple[str, type[BaseModel]]:
    """The dotted config key of a pydantic error location, and the section holding it.

    The location also names the member of a union that failed (``str``, ``list[...]``):
    that is no part of the key."""
    section, parts, model = Config, [], Config
    for item in loc:
        if isinstance(item, int) and parts:
            parts[-1] += f"[{item}]"
        elif model is not None:  # a field of ``model``, or a key it lacks (extra_forbidden)
            section = model
            parts.append(str(item))
            field = model.model_fields.get(item)
            kind = field.annotation if field else None
            model = kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None
    return ".".join(parts) or "config", section


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
    return validate_config(tree, source)


def save_config(cfg: Config, path, *, overwrite: bool = True) -> Path:
    text = "# fully resolved configuration of this run (unet train)\n" + yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    return write_text_atomic(path, text, overwrite=overwrite)
