"""Training-run descriptions: a TOML file read into a :class:`TrainConfig`."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cdinn.errors import InputError
from cdinn.models.base import PRECISIONS


@dataclass
class TrainConfig:
    """Everything a training run needs; see ``configs/*.toml`` for examples.

    Attributes
    ----------
    model : family name (``cdinn models`` lists them) and ``arguments`` for its constructor
    data : ``kind`` = a ``simulate`` family (``faceted``, ``superellipsoids``, ``polygons``,
        ``atomistic``) or a list of them, simulated on the fly in ``workers`` DataLoader
        processes (``n_train``, ``n_val``, ``oversampling = [lo, hi]``, ``photons = [lo, hi]``,
        ``augment``, ``seed``, ``options = {family = {...}}``); or ``kind = "shards"`` (a
        ``cdinn simulate`` dataset: ``path``, ``n_val`` = the last samples held out); either
        with ``centre`` (default true: targets rolled so their support is centred)
    loss : list of ``{name, weight, ...}`` (fourier, supervised, shape, eq6)
    optimizer : "adam", "sgd" or "adam-sgd" (alternate every ``switch_every`` epochs,
        learning rate x0.95 at each switch, as in the transfer-learning paper)
    scheduler : "plateau" (halve the rate after 2 epochs without a better validation loss),
        "cosine" (linear warm-up over ``warmup_steps``, then cosine decay to 1 % by the last
        step) or "none"
    clip_grad : maximum gradient norm (0 = no clipping)
    stages : sequential training (3D-CDI-NN): list of ``{epochs, trainable}``; ``trainable``
        names top-level sub-modules, empty for all. Without stages, all train for ``epochs``.
    init : weights to start from instead of a random initialisation: a shipped model's name,
        a ``.pt`` file or a run directory (``cdinn models`` lists names); its architecture must
        match ``model`` and ``arguments``. Used for warm restarts and fine-tuning.
    precision : the network's arithmetic in training: "auto" (bfloat16 autocast where the
        device computes it natively, a CUDA GPU or a CPU with AMX / AVX512-BF16; float32
        elsewhere), "fp32" or "bf16". Losses and optimizer state stay float32.
    """

    model: str
    arguments: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    loss: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "fourier"}])
    optimizer: str = "adam"
    lr: float = 1e-3
    switch_every: int = 25
    scheduler: str = "plateau"
    warmup_steps: int = 0
    clip_grad: float = 1.0
    epochs: int = 10
    batch_size: int = 16
    stages: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    description: str = ""
    init: str = ""
    precision: str = "auto"

    @property
    def total_epochs(self) -> int:
        return sum(int(s["epochs"]) for s in self.stages) if self.stages else self.epochs

    def stage_at(self, epoch: int) -> dict[str, Any]:
        """The sequential-training stage that ``epoch`` belongs to (all modules without stages)."""
        start = 0
        for stage in self.stages:
            if epoch < start + int(stage["epochs"]):
                return stage
            start += int(stage["epochs"])
        return {"epochs": self.epochs, "trainable": []}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_config(path: str | Path) -> TrainConfig:
    """Read a TOML run description; unknown keys and bad values are :class:`InputError`."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{p}: invalid TOML ({exc})") from None
    known = set(TrainConfig.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise InputError(f"{p}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    if "model" not in raw:
        raise InputError(f"{p}: the 'model' key is required")
    cfg = TrainConfig(**raw)
    _check_types(p, cfg)
    if cfg.optimizer not in ("adam", "sgd", "adam-sgd"):
        raise InputError(f"{p}: optimizer must be adam, sgd or adam-sgd, got {cfg.optimizer!r}")
    if cfg.precision not in PRECISIONS:
        raise InputError(f"{p}: precision must be {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    if cfg.scheduler not in ("plateau", "cosine", "none"):
        raise InputError(f"{p}: scheduler must be plateau, cosine or none, got {cfg.scheduler!r}")
    for stage in cfg.stages:
        if not isinstance(stage, dict) or not isinstance(stage.get("epochs"), int) or stage["epochs"] < 1:
            raise InputError(f"{p}: each stage needs a positive integer 'epochs', got {stage!r}")
        if not isinstance(stage.get("trainable", []), list):
            raise InputError(f"{p}: a stage's 'trainable' must be a list of module names, got {stage!r}")
    return cfg


_TYPES = {"model": str, "arguments": dict, "data": dict, "loss": list, "optimizer": str, "lr": (int, float),
          "switch_every": int, "scheduler": str, "warmup_steps": int, "clip_grad": (int, float), "epochs": int,
          "batch_size": int, "stages": list, "seed": int, "description": str, "init": str, "precision": str}


def _check_types(p: Path, cfg: TrainConfig) -> None:
    for name, kind in _TYPES.items():
        value = getattr(cfg, name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise InputError(f"{p}: {name!r} has the wrong type ({type(value).__name__}: {value!r})")
    positive = {"lr": cfg.lr, "switch_every": cfg.switch_every, "epochs": cfg.epochs, "batch_size": cfg.batch_size}
    for name, value in positive.items():
        if not value > 0:
            raise InputError(f"{p}: {name!r} must be positive, got {value!r}")
    if cfg.warmup_steps < 0 or cfg.clip_grad < 0:
        raise InputError(f"{p}: warmup_steps and clip_grad must not be negative")
    if not all(isinstance(item, dict) and isinstance(item.get("name"), str) for item in cfg.loss):
        raise InputError(f"{p}: 'loss' must be a list of tables with a 'name'")
