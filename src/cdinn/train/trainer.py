"""The one trainer: single device, or data-parallel with PyTorch DDP under ``torchrun``.

A run directory holds ``config.json``-equivalent ``card.json``, ``checkpoint.pt`` (everything
needed to resume, tensors and plain data only), ``best.pt`` (weights of the lowest validation
loss) with ``card.json`` beside it, ``metrics.csv`` and, when TensorBoard is installed, its
event files.

Long runs are cut into pieces: ``max_minutes`` stops at a step boundary with a checkpoint, and
the same call continues mid-epoch with the identical sample order, learning rate, optimizer
state and random state, so three pieces end with the weights of one uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm.auto import tqdm

import cdinn
from cdinn.errors import InputError
from cdinn.io.atomic import atomic_path
from cdinn.models.base import inference_dtype
from cdinn.models.optim import SWITCH_DECAY, alternation, make_optimizer
from cdinn.models.registry import build, load_model
from cdinn.train.config import TrainConfig
from cdinn.train.data import ShardPatterns, generated_patterns
from cdinn.train.losses import CompositeLoss, build_loss


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


def build_datasets(cfg: TrainConfig, model: torch.nn.Module) -> tuple[Dataset, Dataset]:
    """Training and validation sets described by ``cfg.data`` (disjoint sample indices)."""
    d = dict(cfg.data)
    kind = d.pop("kind", "faceted")
    d.pop("workers", None)
    centre = bool(d.pop("centre", True))
    if kind == "shards":
        # A `cdinn simulate` dataset; the last n_val samples are the validation set.
        extra = set(d) - {"path", "n_val"}
        if "path" not in d or extra:
            raise InputError(f"data: kind = 'shards' takes 'path' (required) and 'n_val'"
                             + (f"; unknown: {', '.join(sorted(extra))}" if extra else ""))
        full = ShardPatterns(d["path"], model.input_size, model.output_size)
        n_val = int(d.get("n_val", max(1, len(full) // 10)))
        if not 0 < n_val < len(full):
            raise InputError(f"n_val={n_val} must leave training samples in a dataset of {len(full)}")
        split = len(full) - n_val
        return (ShardPatterns(d["path"], model.input_size, model.output_size, range(split), centre),
                ShardPatterns(d["path"], model.input_size, model.output_size, range(split, len(full)), centre))
    n_train, n_val = int(d.pop("n_train", 256)), int(d.pop("n_val", 32))
    if n_train < 1 or n_val < 1:
        raise InputError(f"n_train and n_val must be positive, got {n_train} and {n_val}")
    seed = int(d.get("seed", cfg.seed))
    # Validation samples sit after the training indices: same families, never trained on.
    return (generated_patterns(cfg.data, model.input_size, model.output_size, model.ndim, seed, n_train),
            generated_patterns(cfg.data, model.input_size, model.output_size, model.ndim, seed, n_val, first=n_train))


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)


def _initialise(model: torch.nn.Module, source: str) -> None:
    """Start from the weights of ``source`` (shipped name, ``.pt`` or run directory).

    A model with more input channels than ``source`` (an added input representation) starts
    with zero weights on the new channels of its first convolution: it computes what
    ``source`` did until training finds a use for them.
    """
    start = load_model(source)
    weights = start.state_dict()
    own = model.state_dict()
    for key, w in weights.items():
        mine = own.get(key)
        if (mine is not None and w.ndim == mine.ndim > 2 and mine.shape[1] > w.shape[1]
                and mine.shape[:1] + mine.shape[2:] == w.shape[:1] + w.shape[2:]):
            weights[key] = torch.cat([w, w.new_zeros((w.shape[0], mine.shape[1] - w.shape[1], *w.shape[2:]))], dim=1)
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise InputError(f"init {source!r}: its weights do not fit this configuration's model "
                         f"({start.card.get('family')} {start.card.get('arguments')})") from None


def optimizer_kind(cfg: TrainConfig, epoch: int) -> str:
    """Adam or SGD at ``epoch``; ``adam-sgd`` alternates every ``switch_every`` epochs."""
    if cfg.optimizer != "adam-sgd":
        return cfg.optimizer
    return alternation(epoch, cfg.switch_every)[0]


def _set_trainable(model: torch.nn.Module, names: list[str]) -> list[torch.nn.Parameter]:
    children = dict(model.named_children())
    unknown = set(names) - set(children)
    if unknown:
        raise InputError(f"unknown trainable module(s) {sorted(unknown)}; have {sorted(children)}")
    for name, child in children.items():
        child.requires_grad_(not names or name in names)
    return [p for p in model.parameters() if p.requires_grad]


def _reduce(values: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(values)
    return values


def schedule_factor(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """Multiplier of the learning rate at ``step``: warm-up, then cosine decay (or constant)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.scheduler != "cosine":
        return 1.0
    span = max(total_steps - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


class _ResumableSampler(Sampler):
    """This rank's share of one epoch's shuffled order (DistributedSampler's), from ``skip`` on."""

    def __init__(self, base: DistributedSampler, skip: int):
        self.base, self.skip = base, skip

    def __iter__(self):
        return iter(list(self.base)[self.skip:])

    def __len__(self) -> int:
        return max(len(self.base) - self.skip, 0)


def _rng_state() -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """A checkpoint written by :func:`train`, loaded without unpickling code (``weights_only``)."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError ... for foreign files
        raise InputError(f"{path}: not a cdinn checkpoint, refusing to load it ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or not {"model", "optimizer", "state", "rng"} <= set(ckpt):
        raise InputError(f"{path}: not a cdinn checkpoint (missing model/optimizer/state/rng)")
    return ckpt


def train(cfg: TrainConfig, run_dir: str | Path, device: str | None = None, progress: bool = True,
          datasets: tuple[Dataset, Dataset] | None = None, max_minutes: float | None = None,
          workers: int | None = None) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir``, resuming from its checkpoint when there is one.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) each process takes its share of every batch
    (``batch_size / world``) and gradients are averaged by DDP, so the result matches a
    single-process run on the same data. Rank 0 alone writes files.

    Parameters
    ----------
    cfg : the run description
    run_dir : where checkpoints, weights, card and metrics go
    device : ``cpu``, ``cuda`` or ``None`` (CUDA when available)
    datasets : explicit (train, validation) datasets instead of ``cfg.data``
    max_minutes : stop at the first step boundary after this many minutes, with a checkpoint
    workers : DataLoader worker processes (default ``cfg.data["workers"]`` or 0)

    Returns
    -------
    dict
        Summary: epochs and steps done, whether the run is complete, best validation loss,
        wall time, run directory.
    """
    rank, world = _distributed()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    run = Path(run_dir)
    if run.exists() and not run.is_dir():
        raise InputError(f"{run}: the run directory is a file")
    torch.manual_seed(cfg.seed)
    model = build(cfg.model, **cfg.arguments).to(dev)
    train_set, val_set = datasets or build_datasets(cfg, model)
    loss_fn: CompositeLoss = build_loss(cfg.loss)
    for stage in cfg.stages:
        _set_trainable(model, list(stage.get("trainable", [])))
    if cfg.batch_size % world:
        raise InputError(f"batch_size {cfg.batch_size} must be divisible by the {world} processes")
    per_rank = cfg.batch_size // world
    base_sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    steps_per_epoch = len(base_sampler) // per_rank
    if steps_per_epoch < 1:
        raise InputError(f"{len(train_set)} training samples make no batch of {cfg.batch_size}")
    total_epochs = cfg.total_epochs
    total_steps = steps_per_epoch * total_epochs
    n_workers = int(cfg.data.get("workers", 0) if workers is None else workers)
    val_loader = DataLoader(val_set, batch_size=per_rank, num_workers=n_workers,
                            sampler=DistributedSampler(val_set, world, rank, shuffle=False))

    state: dict[str, Any] = {"step": 0, "best": float("inf"), "lr": cfg.lr, "elapsed": 0.0, "plateau_scale": 1.0,
                             "plateau_best": float("inf"), "plateau_bad": 0, "key": None, "sums": [0.0, 0.0], "parts": {},
                             "rows": []}
    ckpt_path = run / "checkpoint.pt"
    optimizer = None
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, dev)
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError:
            raise InputError(f"{ckpt_path}: the checkpoint does not fit this configuration's model") from None
        state = ckpt["state"]
        if not isinstance(state, dict) or not {"step", "key", "rows", "lr"} <= set(state):
            raise InputError(f"{ckpt_path}: a checkpoint of an older cdinn trainer; resume it with that version or use a new run directory")
        _set_rng_state(ckpt["rng"])
        if state["key"] is not None:
            trainable, kind = state["key"]
            optimizer = make_optimizer(kind, _set_trainable(model, list(trainable)), state["lr"])
            optimizer.load_state_dict(ckpt["optimizer"])
    else:
        if cfg.init:
            _initialise(model, cfg.init)
        if rank == 0:
            run.mkdir(parents=True, exist_ok=True)

    net = DistributedDataParallel(model) if world > 1 else model
    # bf16 for the network only (losses run in fp32): on a 2-core AMX Xeon a 64³ AutoPhaseNN
    # step at width 8 trains 18 samples/s against 4.7 in float32
    autocast = inference_dtype(dev, cfg.precision) == torch.bfloat16
    writer = _tensorboard(run) if rank == 0 else None
    deadline = None if max_minutes is None else time.monotonic() + 60.0 * max_minutes
    clock = [time.perf_counter()]  # start of the time not yet added to state["elapsed"]
    stopped = False

    def save_checkpoint() -> None:
        state["elapsed"] += time.perf_counter() - clock[0]
        clock[0] = time.perf_counter()
        if rank == 0:
            _save({"model": model.state_dict(), "optimizer": optimizer.state_dict() if optimizer else {},
                   "state": state, "rng": _rng_state()}, ckpt_path)
            # The metrics rows live in the checkpoint: a kill between two writes can never
            # duplicate or lose a row on resume.
            _write_csv(run / "metrics.csv", state["rows"])

    while state["step"] < total_steps and not stopped:
        epoch, offset = divmod(state["step"], steps_per_epoch)
        stage = cfg.stage_at(epoch)
        kind = optimizer_kind(cfg, epoch)
        key = [list(stage.get("trainable", [])), kind]
        if key != state["key"]:
            if state["key"] is not None and state["key"][1] != kind:
                state["lr"] *= SWITCH_DECAY
            optimizer = make_optimizer(kind, _set_trainable(model, key[0]), state["lr"])
            state["key"] = key
        base_sampler.set_epoch(epoch)
        loader = DataLoader(train_set, batch_size=per_rank, num_workers=n_workers, drop_last=True,
                            sampler=_ResumableSampler(base_sampler, offset * per_rank),
                            generator=torch.Generator(), persistent_workers=False)
        loss_fn.set_epoch(epoch, total_epochs)
        net.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{total_epochs}", initial=offset, total=steps_per_epoch,
                   disable=not progress or rank > 0, leave=False)
        for batch in bar:
            lr = state["lr"] * state["plateau_scale"] * schedule_factor(cfg, state["step"], total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=autocast):
                outputs = net(model.prepare(batch["intensity"], batch.get("mask")))
            loss, report = loss_fn(outputs, batch)
            if not bool(torch.isfinite(loss)):
                raise TrainingError(f"non-finite loss at step {state['step']} (epoch {epoch + 1}); "
                                    f"the last good checkpoint in {run} is kept: lower lr or raise clip_grad")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.clip_grad)
            optimizer.step()
            n = batch["intensity"].shape[0]
            state["sums"][0] += float(loss.detach()) * n
            state["sums"][1] += n
            for k, v in report.items():
                state["parts"][k] = state["parts"].get(k, 0.0) + v * n
            state["step"] += 1
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            if state["step"] % steps_per_epoch == 0:
                break
            if deadline is not None and time.monotonic() > deadline:
                stopped = True
                break
        bar.close()
        if stopped:
            save_checkpoint()
            break
        _end_epoch(cfg, state, net, model, val_loader, loss_fn, dev, world, rank, run, epoch, kind, optimizer, writer,
                   clock)
        save_checkpoint()
        if world > 1:
            dist.barrier()
        if deadline is not None and time.monotonic() > deadline and state["step"] < total_steps:
            stopped = True
    if writer is not None:
        writer.close()
    return {"run_dir": str(run), "epochs": state["step"] // steps_per_epoch, "step": state["step"],
            "total_steps": total_steps, "complete": state["step"] >= total_steps,
            "best_val_loss": state["best"], "wall_time_s": state["elapsed"]}


def _end_epoch(cfg, state, net, model, val_loader, loss_fn, dev, world, rank, run, epoch, kind, optimizer, writer,
               clock) -> None:
    sums = _reduce(torch.tensor(state["sums"], dtype=torch.float64, device=dev), world)
    train_loss = float(sums[0] / sums[1].clamp_min(1))
    val_loss = evaluate_loss(net, model, val_loader, loss_fn, dev, world)
    if cfg.scheduler == "plateau":
        # ReduceLROnPlateau's rule (factor 0.5, patience 2), kept in the checkpoint as plain numbers.
        if val_loss < state["plateau_best"] * (1 - 1e-4):
            state["plateau_best"], state["plateau_bad"] = val_loss, 0
        else:
            state["plateau_bad"] += 1
            if state["plateau_bad"] > 2:
                state["plateau_scale"] *= 0.5
                state["plateau_bad"] = 0
    elapsed = state["elapsed"] + time.perf_counter() - clock[0]
    if rank == 0:
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
               "lr": optimizer.param_groups[0]["lr"], "optimizer": kind, "elapsed_s": round(elapsed, 2)}
        row.update({f"train_{k}": v / float(sums[1]) * world for k, v in state["parts"].items()})
        state["rows"].append(row)
        if writer is not None:
            for k, v in row.items():
                if isinstance(v, float):
                    writer.add_scalar(k, v, epoch + 1)
        if val_loss < state["best"]:
            state["best"] = val_loss
            _save(model.state_dict(), run / "best.pt")
            write_card(run / "card.json", cfg, model, {"best_val_loss": val_loss, "epochs": epoch + 1,
                                                        "wall_time_s": elapsed, "world_size": world, "device": str(dev),
                                                        "precision": str(inference_dtype(dev, cfg.precision)).removeprefix("torch.")})
    state["sums"], state["parts"] = [0.0, 0.0], {}


@torch.no_grad()
def evaluate_loss(net: torch.nn.Module, model: torch.nn.Module, loader: DataLoader, loss_fn: CompositeLoss,
                  dev: torch.device, world: int) -> float:
    """Mean loss over a loader (all processes together)."""
    net.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=dev)
    for batch in loader:
        batch = {k: v.to(dev) for k, v in batch.items()}
        loss, _ = loss_fn(net(model.prepare(batch["intensity"], batch.get("mask"))), batch)
        n = batch["intensity"].shape[0]
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
        "input": model.describe().get("input_scale", "sqrt") + "-scaled counts normalised to max 1, zero frequency at the array centre"
                 + ("; second channel: the pattern's autocorrelation, log-scaled over 1e-4..1 of its peak"
                    if getattr(model, "autocorrelation", False) else "")
                 + ("; third and fourth: its phase as cos and sin times that log-scaled modulus"
                    if getattr(model, "autocorrelation_phase", False) else ""),
        "data": cfg.data,
        "loss": cfg.loss,
        "optimizer": cfg.optimizer,
        "batch_size": cfg.batch_size,
        "training": results,
        "held_out": {"n_val": cfg.data.get("n_val"), "val_loss": results.get("best_val_loss"),
                     "note": "validation samples drawn after the training ones, never trained on; "
                             "benchmarks/ship_model.py adds support Dice and phase error beside trivial baselines"},
        "command": " ".join(["cdinn", *sys.argv[1:]]) if Path(sys.argv[0]).name == "cdinn" else " ".join(sys.argv),
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


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _tensorboard(run: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run / "tensorboard"))
