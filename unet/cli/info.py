"""``unet info``: the registered models with their size and geometry, or one checkpoint's model."""

from __future__ import annotations

import unet  # names load lazily (lazy_loader): no torch at `unet --help`
from unet.errors import UserError


def register(sub):
    p = sub.add_parser("info", help="list models, their parameter counts and tile geometry; or describe a checkpoint",
                       description="Without CHECKPOINT: every registered model (or --model). With CHECKPOINT: its "
                                   "model, size, geometry and whether its overlap-tile prediction is seamless "
                                   "(independent of the tile size).")
    p.add_argument("checkpoint", nargs="?", default=None, metavar="CHECKPOINT",
                   help="a checkpoint file (from unet train) to describe")
    p.add_argument("--model", default=None, help="show one model (default: all)")
    p.add_argument("--input-size", type=int, default=572, help="input tile size to report (default: 572, paper Fig. 1)")
    p.set_defaults(func=run)


def _geometry(model, input_size: int) -> str:
    try:
        return f"{input_size} -> {unet.output_size(model, input_size)}"
    except ValueError as err:
        return str(err)


def describe_checkpoint(path, *, input_size: int = 572) -> list[str]:
    """Lines describing the model in checkpoint ``path``, ending with whether it is seamless."""
    # imported here: `unet --help` imports every CLI module and must not load torch
    from unet.checkpoint import load_checkpoint
    from unet.models.seamless import tile_dependence

    model = load_checkpoint(path)
    kwargs = ", ".join(f"{k}={v!r}" for k, v in sorted(getattr(model, "model_kwargs", {}).items()))
    n = sum(p.numel() for p in model.parameters())
    reason = tile_dependence(model)
    seamless = ("seamless: yes (eval-mode output depends on the receptive field only; any tile size gives the "
                "same probabilities)" if reason is None else
                f"seamless: no ({reason}); predictions of images split into several tiles depend on the tile size")
    return [f"{path}", f"model: {model.model_name}({kwargs})", f"parameters: {n:,}",
            f"halo: {unet.halo(model)} px, input -> output: {_geometry(model, input_size)}", seamless]


def run(args) -> int:
    if args.input_size < 1:
        raise UserError(f"--input-size must be a positive number of pixels, got {args.input_size}")
    if args.checkpoint is not None:
        print("\n".join(describe_checkpoint(args.checkpoint, input_size=args.input_size)))
        return 0
    names = [args.model] if args.model else unet.list_models()
    print(f"{'model':<8} {'params':>12} {'halo':>5}  input -> output")
    for name in names:
        try:
            model = unet.create_model(name)
        except ValueError as err:
            raise UserError(str(err)) from err
        n = sum(p.numel() for p in model.parameters())
        print(f"{name:<8} {n:>12,} {unet.halo(model):>5}  {_geometry(model, args.input_size)}")
    print(cpu_line())
    return 0


def cpu_line() -> str:
    """This CPU's vector capability and whether ``train.amp: bf16`` is fast on it."""
    import torch

    from unet.training.trainer import native_cpu_bf16

    cap = torch.backends.cpu.get_cpu_capability()
    if native_cpu_bf16():
        return f"CPU: {cap}, bfloat16 kernels: yes (train.amp: bf16 speeds up CPU training)"
    return (f"CPU: {cap}, bfloat16 kernels: no (train.amp: bf16 runs here as bfloat16's rounding on float32 "
            "kernels, at about the float32 step time: unet.training.bf16)")
