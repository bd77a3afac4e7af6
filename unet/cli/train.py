"""``unet train``: train a model from a YAML config (see configs/)."""

from __future__ import annotations

from pathlib import Path

from unet.errors import UserError
from unet.resources import CONFIG_DIR  # unet/configs (the repository's configs/), shipped in the wheel


def find_config(name_or_path: str) -> Path:
    """A config file path, or the name of one shipped in ``unet/configs/`` (e.g. ``isbi2012``)."""
    p = Path(name_or_path)
    if p.exists() or p.suffix in (".yaml", ".yml"):
        return p
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    return candidate if candidate.exists() else p


def add_run_options(p):
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set train.steps=2000 --set loss.w0=0 (repeatable)")
    p.add_argument("--model", default=None, help="shorthand for --set model.name=NAME (unet, fcn8s, fcn16s, fcn32s)")
    p.add_argument("--steps", type=int, default=None, help="shorthand for --set train.steps=N")
    p.add_argument("--device", default=None, help="cpu, cuda, mps or auto (shorthand for --set train.device=...)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def overrides_from(args) -> list[str]:
    extra = list(args.overrides)
    if args.model:
        extra.append(f"model.name={args.model}")
    if args.steps is not None:
        extra.append(f"train.steps={args.steps}")
    if args.device:
        extra.append(f"train.device={args.device}")
    return extra


def register(sub):
    p = sub.add_parser("train", help="train a U-Net (or FCN) from a config",
                       description="Train with the paper's recipe by default. The fully resolved config, "
                                   "checkpoints (last.pt, best.pt), log.csv, TensorBoard logs, curves.png and "
                                   "validation overlays are written to --out.")
    p.add_argument("--config", required=True, help="YAML file, or a name in configs/ (isbi2012, dic-hela, demo, ...)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start over, replacing a run already in --out")
    p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                   help="initialise weights from a checkpoint (transfer learning)")
    p.add_argument("--partial-init", action="store_true",
                   help="with --init-from: load only the tensors that fit (e.g. another number of classes); "
                        "default: a checkpoint that does not fit the model entirely is refused")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="train only the decoder (feature extraction); default: fine-tune everything")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    # imported here: `unet --help` imports every CLI module and must not load torch or scipy
    from unet.checkpoint import read_checkpoint
    from unet.training.config import flatten_config, load_config
    from unet.training.trainer import Trainer

    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    overrides = overrides_from(args)
    if args.resume and (Path(args.out) / "last.pt").exists():
        # the run's own resolved config, so a resumed run trains exactly what it started; --set may extend it
        saved = read_checkpoint(Path(args.out) / "last.pt")["metadata"]["config"]
        flat = flatten_config(saved)
        cfg = load_config(None, extra=flat, overrides=overrides)
    else:
        cfg = load_config(find_config(args.config), overrides=overrides)
    trainer = Trainer(cfg, args.out, resume=args.resume, overwrite=args.overwrite, init_from=args.init_from,
                      freeze_encoder=args.freeze_encoder, quiet=args.quiet, partial_init=args.partial_init)
    metrics = trainer.fit()
    if trainer.info.is_main:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        print(f"done: {args.out} ({shown})")
    return 0

