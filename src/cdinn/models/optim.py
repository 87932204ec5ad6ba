"""The optimisers networks are trained and tuned with, and their Adam/SGD alternation.

The transfer-learning paper (Yu et al.) alternates Adam and SGD with momentum and lowers the
learning rate by :data:`SWITCH_DECAY` at each switch; the trainer (per epoch) and per-pattern
tuning (per step) both follow this one rule.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

SWITCH_DECAY = 0.95


def make_optimizer(kind: str, params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """``adam`` (torch defaults) or ``sgd`` (momentum 0.9) over ``params`` at rate ``lr``."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    raise ValueError(f"unknown optimiser {kind!r}")


def alternation(index: int, period: int) -> tuple[str, int]:
    """The optimiser at ``index`` (an epoch or a step) when Adam and SGD alternate every ``period``.

    Returns
    -------
    (kind, switches)
        ``adam`` or ``sgd``, and how many switches happened before ``index``: the learning
        rate there is ``lr * SWITCH_DECAY ** switches``.
    """
    switches = index // period
    return ("adam" if switches % 2 == 0 else "sgd"), switches
