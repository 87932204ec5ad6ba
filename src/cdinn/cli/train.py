"""``cdinn train``: train a network from a TOML run description (DDP under torchrun)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from cdinn.cli import COMMANDS
from cdinn.cli.threads import add_threads_argument, choose_threads
from cdinn.errors import InputError
from cdinn.retrieval.engine import resolve_device
from cdinn.train import load_config, train
from cdinn.train.trainer import TrainingError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    p = sub.add_parser(
        "train",
        help=COMMANDS["train"],
        description="Train a network from a TOML run description. Rerunning the same command resumes "
        "from the last checkpoint. For several GPUs/processes: torchrun --nproc_per_node N -m cdinn.cli.main train CONFIG.",
    )
    add_threads_argument(p)
    p.add_argument("config", help="TOML run description (see configs/)")
    p.add_argument("--run-dir", help="run directory (default runs/<config name>)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop at the first step boundary after M minutes, with a checkpoint; the same command continues")
    p.add_argument("--workers", type=int, default=None, help="DataLoader worker processes that simulate samples (default: the config's data.workers, else 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cdinn train``."""
    cfg = load_config(args.config)
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise InputError(f"--max-minutes must be positive, got {args.max_minutes}")
    if args.workers is not None and args.workers < 0:
        raise InputError(f"--workers must not be negative, got {args.workers}")
    run_dir = Path(args.run_dir or Path("runs") / Path(args.config).stem)
    device = resolve_device(args.device)
    workers = int(cfg.data.get("workers", 0) if args.workers is None else args.workers)
    if device.type == "cpu" and workers:
        torch.set_num_threads(choose_threads(args.threads, reserved=workers))
    try:
        summary = train(cfg, run_dir, device=device, progress=not args.quiet,
                        max_minutes=args.max_minutes, workers=args.workers)
    except TrainingError as exc:
        print(f"cdinn train: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    return 0
