"""The one trainer: single device, or data-parallel with PyTorch DDP under ``torchrun``.

A run directory holds ``config.json``, ``checkpoint.pt`` (everything needed to resume),
``best.pt`` (weights of the lowest validation loss) with ``card.json`` beside it,
``metrics.csv`` and, when TensorBoard is installed, its event files.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

import cdinn
from cdinn.io.atomic import atomic_path
from cdinn.models.registry import build
from cdinn.train.config import TrainConfig
from cdinn.train.data import ShardPatterns, SimulatedPatterns
from cdinn.train.losses import CompositeLoss, build_loss


def build_datasets(cfg: TrainConfig, model: torch.nn.Module, progress: bool) -> tuple[Dataset, Dataset]:
    """Training and validation sets described by ``cfg.data`` (disjoint seeds)."""
    d = dict(cfg.data)
    kind = d.pop("kind", "faceted")
    if kind == "shards":
        # A `cdinn simulate` dataset; the last n_val samples are the validation set.
        full = ShardPatterns(d["path"], model.input_size, model.output_size)
        n_val = int(d.get("n_val", max(1, len(full) // 10)))
        if not 0 < n_val < len(full):
            raise ValueError(f"n_val={n_val} must leave training samples in a dataset of {len(full)}")
        split = len(full) - n_val
        return (ShardPatterns(d["path"], model.input_size, model.output_size, range(split)),
                ShardPatterns(d["path"], model.input_size, model.output_size, range(split, len(full))))
    if kind != "faceted":
        raise ValueError(f"unknown data kind {kind!r}; use faceted or shards")
    n_train, n_val = int(d.pop("n_train", 256)), int(d.pop("n_val", 32))
    seed = int(d.pop("seed", cfg.seed))
    common = dict(size=model.input_size, ndim=model.ndim, output_size=model.output_size, progress=progress, **d)
    return SimulatedPatterns(n_train, seed=seed, **common), SimulatedPatterns(n_val, seed=seed + 1_000_003, **common)


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)


def _optimizer(cfg: TrainConfig, params, epoch: int, lr: float) -> torch.optim.Optimizer:
    kind = cfg.optimizer
    if kind == "adam-sgd":
        kind = "adam" if (epoch // cfg.switch_every) % 2 == 0 else "sgd"
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def _set_trainable(model: torch.nn.Module, names: list[str]) -> list[torch.nn.Parameter]:
    children = dict(model.named_children())
    unknown = set(names) - set(children)
    if unknown:
        raise ValueError(f"unknown trainable module(s) {sorted(unknown)}; have {sorted(children)}")
    for name, child in children.items():
        child.requires_grad_(not names or name in names)
    return [p for p in model.parameters() if p.requires_grad]


def _reduce(values: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(values)
    return values


def train(cfg: TrainConfig, run_dir: str | Path, device: str | None = None, progress: bool = True,
          datasets: tuple[Dataset, Dataset] | None = None) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir``, resuming from its checkpoint when there is one.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) each process takes its share of every batch
    (``batch_size / world``) and gradients are averaged by DDP, so the result matches a
    single-process run on the same data. Rank 0 alone writes files.

    Returns
    -------
    dict
        Summary: epochs run, best validation loss, wall time, run directory.
    """
    rank, world = _distributed()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    run = Path(run_dir)
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = build(cfg.model, **cfg.arguments).to(dev)
    train_set, val_set = datasets or build_datasets(cfg, model, progress and rank == 0)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {world} processes")
    per_rank = cfg.batch_size // world
    # The same sampler in single-process runs keeps the sample order identical to DDP's.
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler)
    val_loader = DataLoader(val_set, batch_size=per_rank, sampler=DistributedSampler(val_set, world, rank, shuffle=False))
    loss_fn: CompositeLoss = build_loss(cfg.loss)

    state: dict[str, Any] = {"epoch": 0, "best": float("inf"), "lr": cfg.lr, "elapsed": 0.0}
    ckpt_path = run / "checkpoint.pt"
    opt_state = sched_state = None
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=dev, weights_only=False)
        model.load_state_dict(ckpt["model"])
        state, opt_state, sched_state = ckpt["state"], ckpt["optimizer"], ckpt["scheduler"]
        torch.set_rng_state(ckpt["rng"])

    net = DistributedDataParallel(model) if world > 1 else model
    amp_enabled = dev.type == "cuda"
    total = cfg.total_epochs
    writer = _tensorboard(run) if rank == 0 else None
    t_start = time.perf_counter()
    optimizer = scheduler = None
    current_key = None
    for epoch in range(state["epoch"], total):
        stage = cfg.stage_at(epoch)
        kind = cfg.optimizer if cfg.optimizer != "adam-sgd" else ("adam" if (epoch // cfg.switch_every) % 2 == 0 else "sgd")
        key = (tuple(stage.get("trainable", [])), kind)
        if key != current_key:
            if current_key is not None and current_key[1] != kind:
                state["lr"] *= 0.95
            params = _set_trainable(model, list(stage.get("trainable", [])))
            optimizer = _optimizer(cfg, params, epoch, state["lr"])
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2) if cfg.scheduler == "plateau" else None
            if opt_state is not None:
                optimizer.load_state_dict(opt_state)
                if scheduler is not None and sched_state is not None:
                    scheduler.load_state_dict(sched_state)
                opt_state = None
            current_key = key
        sampler.set_epoch(epoch)
        loss_fn.set_epoch(epoch, total)
        net.train()
        sums = torch.zeros(2, dtype=torch.float64, device=dev)
        parts: dict[str, float] = {}
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{total}", disable=not progress or rank > 0, leave=False)
        for batch in bar:
            batch = {k: v.to(dev) for k, v in batch.items()}
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp_enabled):
                outputs = net(batch["input"])
            loss, report = loss_fn(outputs, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = batch["input"].shape[0]
            sums += torch.tensor([float(loss.detach()) * n, n], dtype=torch.float64, device=dev)
            for k, v in report.items():
                parts[k] = parts.get(k, 0.0) + v * n
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        sums = _reduce(sums, world)
        train_loss = float(sums[0] / sums[1])
        val_loss = evaluate_loss(net, val_loader, loss_fn, dev, world)
        if scheduler is not None:
            scheduler.step(val_loss)
        state["epoch"] = epoch + 1
        state["elapsed"] += time.perf_counter() - t_start
        t_start = time.perf_counter()
        if rank == 0:
            row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                   "lr": optimizer.param_groups[0]["lr"], "optimizer": kind, "elapsed_s": round(state["elapsed"], 2)}
            row.update({f"train_{k}": v / float(sums[1]) * world for k, v in parts.items()})
            _append_csv(run / "metrics.csv", row)
            if writer is not None:
                for k, v in row.items():
                    if isinstance(v, float):
                        writer.add_scalar(k, v, epoch + 1)
            if val_loss < state["best"]:
                state["best"] = val_loss
                _save(model.state_dict(), run / "best.pt")
                write_card(run / "card.json", cfg, model, {"best_val_loss": val_loss, "epochs": epoch + 1,
                                                            "wall_time_s": state["elapsed"], "world_size": world, "device": str(dev)})
            _save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                   "scheduler": scheduler.state_dict() if scheduler is not None else None,
                   "state": state, "rng": torch.get_rng_state()}, ckpt_path)
        if world > 1:
            dist.barrier()
    if writer is not None:
        writer.close()
    return {"run_dir": str(run), "epochs": state["epoch"], "best_val_loss": state["best"], "wall_time_s": state["elapsed"]}


@torch.no_grad()
def evaluate_loss(net: torch.nn.Module, loader: DataLoader, loss_fn: CompositeLoss, dev: torch.device, world: int) -> float:
    """Mean loss over a loader (all processes together)."""
    net.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=dev)
    for batch in loader:
        batch = {k: v.to(dev) for k, v in batch.items()}
        loss, _ = loss_fn(net(batch["input"]), batch)
        n = batch["input"].shape[0]
        sums += torch.tensor([float(loss) * n, n], dtype=torch.float64, device=dev)
    sums = _reduce(sums, world)
    return float(sums[0] / sums[1].clamp_min(1))


def write_card(path: Path, cfg: TrainConfig, model: torch.nn.Module, results: dict[str, Any]) -> None:
    """The model card: architecture, data, training, results, environment."""
    card = {
        "family": cfg.model,
        "arguments": cfg.arguments,
        "architecture": model.describe(),
        "description": cfg.description,
        "input": "sqrt(I) normalised to max 1, zero frequency at the array centre",
        "data": cfg.data,
        "loss": cfg.loss,
        "optimizer": cfg.optimizer,
        "batch_size": cfg.batch_size,
        "training": results,
        "hardware": f"{platform.machine()} {os.cpu_count()} CPU" + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        "torch": torch.__version__,
        "cdinn": cdinn.__version__,
        "config": cfg.to_dict(),
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(card, indent=2))


def _save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _tensorboard(run: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run / "tensorboard"))
