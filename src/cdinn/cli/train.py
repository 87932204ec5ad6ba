"""``cdinn train``: train a network from a TOML run description (DDP under torchrun)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from cdinn.train import load_config, train


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    p = sub.add_parser(
        "train",
        help="train a network (resumes an interrupted run; DDP under torchrun)",
        description="Train a network from a TOML run description. Rerunning the same command resumes "
        "from the last checkpoint. For several GPUs/processes: torchrun --nproc_per_node N -m cdinn.cli.main train CONFIG.",
    )
    p.add_argument("config", help="TOML run description (see configs/)")
    p.add_argument("--run-dir", help="run directory (default runs/<config name>)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cdinn train``."""
    cfg = load_config(args.config)
    run_dir = Path(args.run_dir or Path("runs") / Path(args.config).stem)
    summary = train(cfg, run_dir, device=args.device, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    return 0
