"""Model registry: build a network by family name, list and load shipped or trained models.

A *saved model* is a state dict file (``NAME.pt``) with a JSON model card beside it
(``NAME.json``: family, constructor arguments, training data, metrics, the command that made
it). Shipped models live in ``cdinn/models/weights/``; a user model is any such pair on disk
(e.g. the ``best.pt`` + ``card.json`` of a training run directory).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from cdinn.errors import InputError

_FAMILIES: dict[str, type] = {}
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def register(name: str):
    """Class decorator adding a network family to the registry under ``name``."""

    def wrap(cls: type) -> type:
        _FAMILIES[name] = cls
        return cls

    return wrap


def families() -> list[str]:
    """Names of the registered network families."""
    return sorted(_FAMILIES)


def build(family: str, **kwargs: Any) -> torch.nn.Module:
    """Instantiate a network of ``family`` with constructor arguments ``kwargs``."""
    if family not in _FAMILIES:
        raise InputError(f"unknown model family {family!r}; known: {', '.join(families())}")
    try:
        return _FAMILIES[family](**kwargs)
    except (TypeError, ValueError) as exc:
        raise InputError(f"bad arguments for model family {family!r}: {exc}") from None


def shipped_models() -> list[dict[str, Any]]:
    """Cards of the models shipped with the package, each with its ``name`` and ``file``."""
    cards = []
    for card_path in sorted(WEIGHTS_DIR.glob("*.json")):
        card = json.loads(card_path.read_text())
        card.setdefault("name", card_path.stem)
        card["file"] = str(card_path.with_suffix(".pt"))
        cards.append(card)
    return cards


def _locate(name_or_path: str | Path) -> tuple[Path, Path]:
    p = Path(name_or_path)
    if p.suffix == ".pt" and p.exists():
        card = p.with_suffix(".json") if p.with_suffix(".json").exists() else p.parent / "card.json"
        return p, card
    if p.is_dir() and (p / "best.pt").exists():
        return p / "best.pt", p / "card.json"
    shipped = WEIGHTS_DIR / f"{name_or_path}.pt"
    if shipped.exists():
        return shipped, shipped.with_suffix(".json")
    names = ", ".join(c["name"] for c in shipped_models()) or "none"
    raise InputError(f"unknown model {str(name_or_path)!r}; shipped models: {names}; or give a .pt file or a run directory")


def load_model(name_or_path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a shipped model by name, or a saved model from a ``.pt`` file or run directory.

    The returned network is in evaluation mode and carries its card as ``model.card``.
    """
    weights, card_path = _locate(name_or_path)
    if not card_path.exists():
        raise InputError(f"{weights}: no model card ({card_path.name}) beside the weights")
    try:
        card = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{card_path}: not a valid model card ({exc})") from None
    if not isinstance(card, dict) or not isinstance(card.get("family"), str) or not isinstance(card.get("arguments", {}), dict):
        raise InputError(f"{card_path}: a model card needs a 'family' name and an 'arguments' table")
    model = build(card["family"], **card.get("arguments", {}))
    try:
        state = torch.load(weights, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise InputError(f"{weights}: cannot load weights ({type(exc).__name__})") from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError):
        raise InputError(f"{weights}: the weights do not fit the card's architecture ({card.get('family')})") from None
    card.setdefault("name", weights.stem if weights.parent == WEIGHTS_DIR else str(weights))
    card["weights"] = str(weights.resolve())
    card["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    model.card = card
    return model.to(device).eval()
