"""The ``unet`` command line: one entry point, one module per subcommand.

Each module in :data:`COMMANDS` defines ``register(subparsers)``, which adds its
sub-parser and sets ``func`` (a callable taking the parsed ``argparse.Namespace``
and returning an exit code).  Errors that a user can fix raise
:class:`unet.errors.UserError`; they, and faults of the environment (a full
disk, no permission, out of memory: :func:`unet.errors.user_message`), are
printed as one clear line and give exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import warnings

from unet import __version__
from unet.errors import UnetWarning, user_message

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
        importlib.import_module(name).register(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's cancel, ``kill``): unwound like Ctrl-C, so temporary files are removed."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        with warnings.catch_warnings():
            show = warnings.showwarning

            def one_line(message, category, *rest, **kw):
                if issubclass(category, UnetWarning):
                    print(f"unet {args.command}: warning: {message}", file=sys.stderr)
                else:
                    show(message, category, *rest, **kw)

            warnings.showwarning = one_line
            warnings.simplefilter("always", UnetWarning)
            return int(args.func(args) or 0)
    except Terminated:
        print(f"unet {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"unet {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        message = user_message(err)  # the one place that tells the user's errors from bugs
        if message is None:
            raise
        print(f"unet {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
