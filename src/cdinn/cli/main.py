"""Entry point of the ``cdinn`` command: one sub-command per module of this package."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence

from cdinn import __version__
from cdinn.cli import COMMANDS
from cdinn.cli.threads import apply_threads
from cdinn.errors import InputError
from cdinn.runtime import tune_process


class Parser(argparse.ArgumentParser):
    """argparse with the project's error line: ``cdinn CMD: error: ...`` and exit 2, no usage dump."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only ``command``'s module is imported and registers its options
    (``"*"``: every command's), the others are listed by name and help."""
    parser = Parser(
        prog="cdinn",
        description="Invert coherent diffraction patterns (2D CDI, 3D Bragg CDI) into complex real-space images.",
    )
    parser.add_argument("--version", action="version", version=f"cdinn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_ in COMMANDS.items():
        if command in (name, "*"):
            importlib.import_module(f"cdinn.cli.{name}").register(sub)
        else:
            sub.add_parser(name, help=help_, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input, no traceback)."""
    tune_process()  # before a command module imports numpy
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(next((a for a in argv if a in COMMANDS), None))
    args = parser.parse_args(argv)
    # SIGTERM (a batch system's stop, `kill`) ends a command like Ctrl-C: writes are atomic, so
    # nothing partial is left, and the trainer and simulate resume from what they recorded.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    previous_threads = None
    try:
        if hasattr(args, "threads"):
            previous_threads = apply_threads(args.threads)
        return int(args.run(args) or 0)
    except InputError as exc:
        print(f"cdinn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cdinn {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`cdinn models --json | head`): nothing more to say, and nothing to
        # flush either, so the interpreter's exit does not complain about stdout.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:  # a bug, not bad input: one line unless --debug asks for the traceback
        if args.debug:
            raise
        print(f"cdinn {args.command}: internal error: {type(exc).__name__}: {exc} (run `cdinn --debug {args.command} ...` "
              "for the traceback)", file=sys.stderr)
        return 1
    finally:
        # A caller in the same process (a script, the benchmarks) keeps its own thread count:
        # a benchmark section once ran on one thread after an in-process `cdinn prepare`.
        if previous_threads is not None:
            apply_threads(previous_threads)


if __name__ == "__main__":
    sys.exit(main())
