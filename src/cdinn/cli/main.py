"""Entry point of the ``cdinn`` command: one sub-command per module of this package."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cdinn import __version__
from cdinn.cli import demo, invert, models, phase, prepare, report, simulate, train
from cdinn.cli.threads import apply_threads
from cdinn.errors import InputError

COMMANDS = (prepare, phase, invert, report, demo, train, models, simulate)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (sub-commands register themselves)."""
    parser = argparse.ArgumentParser(
        prog="cdinn",
        description="Invert coherent diffraction patterns (2D CDI, 3D Bragg CDI) into complex real-space images.",
    )
    parser.add_argument("--version", action="version", version=f"cdinn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input, no traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "threads"):
            apply_threads(args.threads)
        return int(args.run(args) or 0)
    except InputError as exc:
        print(f"cdinn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cdinn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
