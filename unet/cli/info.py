"""``unet info``: the registered models with their size and geometry."""

from __future__ import annotations


def register(sub):
    p = sub.add_parser("info", help="list models, their parameter counts and tile geometry")
    p.add_argument("--model", default=None, help="show one model (default: all)")
    p.add_argument("--input-size", type=int, default=572, help="input tile size to report (default: 572, paper Fig. 1)")
    p.set_defaults(func=run)


def run(args) -> int:
    import unet
    from unet.errors import UserError

    if args.input_size < 1:
        raise UserError(f"--input-size must be a positive number of pixels, got {args.input_size}")
    names = [args.model] if args.model else unet.list_models()
    print(f"{'model':<8} {'params':>12} {'halo':>5}  input -> output")
    for name in names:
        try:
            model = unet.create_model(name)
        except ValueError as err:
            raise UserError(str(err)) from err
        n = sum(p.numel() for p in model.parameters())
        try:
            out = unet.output_size(model, args.input_size)
            geo = f"{args.input_size} -> {out}"
        except ValueError as err:
            geo = str(err)
        print(f"{name:<8} {n:>12,} {unet.halo(model):>5}  {geo}")
    return 0
