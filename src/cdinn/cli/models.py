"""``cdinn models``: list the network families and the shipped (and given) trained models."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cdinn.cli import COMMANDS
from cdinn.errors import InputError
from cdinn.models import families, shipped_models


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` sub-command."""
    p = sub.add_parser("models", help=COMMANDS["models"], description="List the network families, "
                       "the models shipped with cdinn, and trained models in the given run directories.")
    p.add_argument("runs", nargs="*", help="training run directories (holding best.pt and card.json)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)


def _entry(card: dict, file: str, origin: str) -> dict:
    arch = card.get("architecture", {})
    return {
        "name": card.get("name", Path(file).parent.name),
        "family": card.get("family"),
        "ndim": arch.get("ndim"),
        "input_shape": arch.get("input_shape"),
        "output_shape": arch.get("output_shape"),
        "parameters": arch.get("parameters"),
        "origin": origin,
        "file": file,
    }


def run(args: argparse.Namespace) -> int:
    """Execute ``cdinn models``."""
    entries = [_entry(c, c["file"], "shipped") for c in shipped_models()]
    for r in args.runs:
        card = Path(r) / "card.json"
        if not card.exists():
            raise InputError(f"{r}: not a training run directory (no card.json)")
        entries.append(_entry(json.loads(card.read_text()), str(Path(r) / "best.pt"), "user"))
    if args.json:
        print(json.dumps({"families": families(), "models": entries}, indent=2))
        return 0
    print("families: " + ", ".join(families()))
    for e in entries:
        shape = "x".join(map(str, e["input_shape"] or [])) + " -> " + "x".join(map(str, e["output_shape"] or []))
        print(f"{e['name']:24s} {e['family']:12s} {e['ndim']}D  {shape:16s} {e['parameters'] or 0:>9,} params  [{e['origin']}] {e['file']}")
    return 0
