"""The ``unet`` command line: one entry point, one module per subcommand.

Each module in :data:`COMMANDS` defines ``register(subparsers)``, which adds its
sub-parser and sets ``func`` (a callable taking the parsed ``argparse.Namespace``
and returning an exit code).  Errors that a user can fix raise
:class:`unet.errors.UserError`; they are printed as one clear line and give
exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from unet import __version__
from unet.errors import UserError

#: Subcommand modules, in the order ``unet --help`` lists them.
COMMANDS = [
    "unet.cli.info",
    "unet.cli.data",
    "unet.cli.train",
    "unet.cli.predict",
    "unet.cli.evaluate",
    "unet.cli.export",
    "unet.cli.demo",
    "unet.cli.reproduce",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unet",
        description="U-Net (Ronneberger, Fischer & Brox 2015) for biomedical image segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"unet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # subcommand not written yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"unet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
