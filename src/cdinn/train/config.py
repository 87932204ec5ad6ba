"""Training-run descriptions: a TOML file read into a :class:`TrainConfig`."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cdinn.errors import InputError


@dataclass
class TrainConfig:
    """Everything a training run needs; see ``configs/*.toml`` for examples.

    Attributes
    ----------
    model : family name (``cdinn models`` lists them) and ``arguments`` for its constructor
    data : ``kind = "faceted"`` (simulated in memory: ``n_train``, ``n_val``,
        ``oversampling``, ``photons``, ``phase_range``, ``seed``) or ``kind = "shards"``
        (a ``cdinn simulate`` dataset: ``path``, ``n_val`` = the last samples held out)
    loss : list of ``{name, weight, ...}`` (fourier, supervised, eq6)
    optimizer : "adam", "sgd" or "adam-sgd" (alternate every ``switch_every`` epochs,
        learning rate x0.95 at each switch, as in the transfer-learning paper)
    scheduler : "plateau" (ReduceLROnPlateau, factor 0.5) or "none"
    stages : sequential training (3D-CDI-NN): list of ``{epochs, trainable}``; ``trainable``
        names top-level sub-modules, empty for all. Without stages, all train for ``epochs``.
    """

    model: str
    arguments: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    loss: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "fourier"}])
    optimizer: str = "adam"
    lr: float = 1e-3
    switch_every: int = 25
    scheduler: str = "plateau"
    epochs: int = 10
    batch_size: int = 16
    stages: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    description: str = ""

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
    if cfg.optimizer not in ("adam", "sgd", "adam-sgd"):
        raise InputError(f"{p}: optimizer must be adam, sgd or adam-sgd, got {cfg.optimizer!r}")
    if cfg.scheduler not in ("plateau", "none"):
        raise InputError(f"{p}: scheduler must be plateau or none, got {cfg.scheduler!r}")
    return cfg
