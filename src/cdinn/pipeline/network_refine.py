"""Per-pattern unsupervised refinement of a network (transfer-learning paper): fine-tune a
trained network on one pattern (``tl``), or fit a randomly initialised one (``dip``, phase
retrieval by an untrained network)."""

from __future__ import annotations

import copy
import math

import torch
from tqdm.auto import tqdm

from cdinn.models.base import CDIModel
from cdinn.models.optim import SWITCH_DECAY, alternation, make_optimizer
from cdinn.models.registry import build
from cdinn.physics.farfield import FarField, predicted_object


def weibull_beta(step: int, total: int, start: float = 1e4, end: float = 1.0, k: float = 1.0, lam: float = 0.5) -> float:
    """Eq. 8: ``a0 (k/lam) (t/lam)^(k-1) exp(-(t/lam)^k) + a1`` with ``t = step/(total-1)`` and
    ``a0, a1`` chosen so that the weight goes from ``start`` to ``end``."""
    f = lambda t: (k / lam) * (t / lam) ** (k - 1) * math.exp(-((t / lam) ** k)) if t > 0 or k == 1 else 0.0  # noqa: E731
    f0, f1 = f(0.0), f(1.0)
    a0 = (start - end) / (f0 - f1)
    a1 = end - a0 * f1
    t = step / max(total - 1, 1)
    return a0 * f(t) + a1


def fine_tune(
    model: CDIModel,
    intensity: torch.Tensor,
    steps: int,
    mask: torch.Tensor | None = None,
    random_init: bool = False,
    seed: int = 0,
    lr: float = 0.006,
    switch_every: int = 200,
    progress: bool = False,
) -> tuple[torch.Tensor, list[float]]:
    """Fit a copy of ``model`` to one pattern with the loss of Eq. 7.

    ``(beta1 (1 - Pearson) + beta2 chi2) / (beta1 + beta2)`` on ``sqrt(I)``, beta1 following
    :func:`weibull_beta` from 1e4 to 1, beta2 = 1; Adam and SGD alternate every
    ``switch_every`` steps with the learning rate x0.95 at each switch.

    Parameters
    ----------
    model : trained network (left untouched; a copy is tuned)
    intensity : pattern on the model's input grid ``(*input)``
    steps : optimisation steps
    mask : non-zero where a pixel was not measured, on the same grid: those pixels are not fitted
    random_init : re-initialise the copy's weights (seeded): the untrained-network method

    Returns
    -------
    (complex object on the model's output grid, loss history)
    """
    if random_init:
        torch.manual_seed(seed)
        net = build(model.family, **model.config).to(intensity.device)
    else:
        net = copy.deepcopy(model)
    net.train()
    batch_mask = None if mask is None else mask.unsqueeze(0)
    x = model.prepare(intensity.unsqueeze(0), batch_mask)
    physics = FarField(intensity.unsqueeze(0), batch_mask)
    history: list[float] = []
    opt = make_optimizer("adam", net.parameters(), lr)
    with torch.enable_grad():  # also when called from inside a no-grad recipe run
        for step in tqdm(range(steps), desc="network refinement", disable=not progress, leave=False):
            if step and step % switch_every == 0:
                kind, switches = alternation(step, switch_every)
                opt = make_optimizer(kind, net.parameters(), lr * SWITCH_DECAY**switches)
            # Pearson and chi² are both blind to the scale: one transform serves the two.
            modulus = physics.modulus(predicted_object(net(x)))
            beta1 = weibull_beta(step, steps)
            l3 = 1.0 - physics.pearson(modulus)
            l4 = physics.chi2(modulus)
            loss = ((beta1 * l3 + l4) / (beta1 + 1.0)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(float(l4.detach().mean()))
    # Batch statistics, as during tuning: one pattern's running averages would not match them.
    with torch.no_grad():
        out = net(x)
    return torch.polar(out["amplitude"][0].float(), out["phase"][0].float()), history
