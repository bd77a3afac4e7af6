"""``unet export``: a checkpoint as TorchScript, ONNX or a bioimage.io model package."""

from __future__ import annotations


def register(sub):
    p = sub.add_parser(
        "export",
        help="export a checkpoint as TorchScript, ONNX or a bioimage.io model package",
        description="Write the trained network for use outside this package: a TorchScript module, an ONNX graph "
                    "(dynamic height and width) or a bioimage.io model package (zip; Fiji/deepImageJ, ilastik, "
                    "napari). Every format outputs softmax class probabilities for inputs of a valid size. ONNX and "
                    "bioimage.io need: pip install 'unet[export]'.",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="model checkpoint (from unet train)")
    p.add_argument("-o", "--out", required=True, help="output file (.pt for torchscript, .onnx, .zip for bioimageio)")
    p.add_argument("--format", choices=["torchscript", "onnx", "bioimageio"], required=True, help="export format")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--allow-tile-dependent", action="store_true",
                   help="export a network whose prediction depends on the tile size (instance/group/layer "
                        "normalisation or same padding); refused by default")
    p.add_argument("--sample", default=None,
                   help="bioimageio: real image for the test tensors and cover (default: an ISBI 2012 slice)")
    p.add_argument("--author", action="append", default=None, help="bioimageio: an author's name (repeatable)")
    p.add_argument("--license", default=None, help="bioimageio: SPDX licence of the weights (default: CC-BY-4.0)")
    p.add_argument("--name", default=None, help="bioimageio: the model's name")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from unet.export import export

    out = export(args.checkpoint, args.out, format=args.format, overwrite=args.overwrite,
                 allow_tile_dependent=args.allow_tile_dependent, sample=args.sample, authors=args.author,
                 license=args.license, name=args.name)
    print(f"{args.checkpoint} -> {out} ({args.format})", file=sys.stderr)
    return 0
