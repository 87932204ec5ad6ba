"""``invert``: pattern -> network prediction -> refinement -> result.

Preprocess (bin, crop/pad to the model's grid, record the transform), predict, postprocess
(support, largest component, centring, phase offset), map back onto the measured grid, then
refine with any chain of ``er:N`` / recipe, ``ad:N``, ``tl:N``, ``dip:N`` steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import cdinn
from cdinn.errors import InputError
from cdinn.io.results import Result
from cdinn.models.base import CDIModel
from cdinn.physics.align import align
from cdinn.physics.fourier import as_tensor
from cdinn.physics.metrics import chi2
from cdinn.physics.fourier import intensity as model_intensity
from cdinn.pipeline.network_refine import fine_tune
from cdinn.pipeline.postprocess import clean_prediction
from cdinn.pipeline.sampling import check_dimensionality, to_input_grid, to_model_grid
from cdinn.retrieval.autodiff import autodiff_refine
from cdinn.retrieval.phase_retrieval import phase_retrieval
from cdinn.retrieval.recipe import parse_recipe


@dataclass(frozen=True)
class Refinement:
    """One refinement step: ``kind`` in er, recipe, ad, tl, dip; ``steps``; ``recipe`` text."""

    kind: str
    steps: int = 0
    recipe: str = ""


def parse_refinement(spec: str | None) -> list[Refinement]:
    """Parse ``er:50``, ``pr:150``, ``ad:300``, ``tl:200``, ``dip:2000``, ``none`` or a retrieval
    recipe, chained with ``+`` (e.g. ``tl:100+er:50``).

    ``pr:N`` is a short phase retrieval from the prediction that lets shrink-wrap move the
    support: ``AVG**10 * ER**40 * (SUP * ER**10 * HIO**40)**k`` with ``k = (N - 50) / 50``.
    It escapes the flat-phase minimum that ER alone stalls in when a network predicts the
    shape well but the phase poorly.
    """
    if spec is None or spec.strip().lower() in ("", "none"):
        return []
    steps = []
    for part in spec.split("+"):
        part = part.strip()
        kind, _, num = part.partition(":")
        kind = kind.lower()
        if kind in ("er", "pr", "ad", "tl", "dip") and num:
            if not num.isdigit() or int(num) < 1:
                raise InputError(f"refinement {part!r}: the step count must be a positive integer")
            n = int(num)
            if kind == "er":
                steps.append(Refinement("recipe", n, f"ER**{n}"))
            elif kind == "pr":
                if n < 100:
                    raise InputError(f"refinement {part!r}: pr needs at least 100 iterations")
                steps.append(Refinement("recipe", n, f"AVG**10*ER**40*(SUP*ER**10*HIO**40)**{(n - 50) // 50}"))
            else:
                steps.append(Refinement(kind, n))
        else:
            parse_recipe(part)  # a clear error for anything that is neither
            steps.append(Refinement("recipe", 0, part))
    return steps


def predict(model: CDIModel, patterns: torch.Tensor, bin_factor: int = 1) -> tuple[torch.Tensor, Any]:
    """Network prediction for a batch of patterns ``(B, *spatial)`` of the same shape.

    Returns the raw complex predictions on the model's output grid and the grid transform.
    """
    check_dimensionality(patterns.ndim - 1, model.ndim, model.family)
    on_grid, transform = to_model_grid(patterns, model.input_size, bin_factor, ndim=model.ndim)
    return model.predict(on_grid.to(next(model.parameters()).device)), transform


def invert(
    pattern: np.ndarray | torch.Tensor,
    model: CDIModel,
    refine: str | None = "er:50",
    mask: np.ndarray | None = None,
    bin_factor: int = 1,
    threshold: float = 0.1,
    device: str | torch.device = "cpu",
    seed: int = 0,
    prediction: tuple[torch.Tensor, Any] | None = None,
    progress: bool = False,
) -> Result:
    """Invert one measured pattern with a network and refine the result.

    Parameters
    ----------
    pattern : measured intensity ``(*spatial)``
    model : a loaded network (:func:`cdinn.models.load_model`)
    refine : refinement chain (see :func:`parse_refinement`)
    mask : non-zero where a pixel was not measured
    bin_factor : integer binning before the crop to the model's grid
    threshold : support threshold of the prediction's amplitude
    prediction : a precomputed ``(raw prediction, transform)`` for this pattern (batched use)

    Returns
    -------
    Result
        Object on the measured grid, support, chi², history, per-stage timings, provenance
        (model card name, refinement, grid transform, whether the prediction was the twin of
        the refined result).
    """
    steps = parse_refinement(refine)
    dev = torch.device(device)
    meas = as_tensor(pattern, dev).to(torch.float32)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if prediction is None:
        raw, transform = predict(model, meas.unsqueeze(0), bin_factor)
        raw = raw[0]
    else:
        raw, transform = prediction
    timings["predict_s"] = time.perf_counter() - t

    t = time.perf_counter()
    obj, support = _to_measured_grid(raw, transform, threshold)
    nn_object = obj.clone()
    timings["postprocess_s"] = time.perf_counter() - t
    history: dict[str, np.ndarray] = {}
    current_chi2 = float(chi2(model_intensity(obj), meas, mask))
    chain = [{"stage": "network", "chi2": current_chi2}]
    for k, step in enumerate(steps):
        t = time.perf_counter()
        if step.kind == "recipe":
            res = phase_retrieval(meas, step.recipe, mask=mask, support=support.cpu().numpy(), initial=obj, device=dev, progress=progress)
            obj, support = as_tensor(res.object, dev), as_tensor(res.support, dev)
            hist = res.history["chi2"][:, 0]
        elif step.kind == "ad":
            res = autodiff_refine(meas, obj, support, steps=step.steps, mask=mask, device=dev, progress=progress)
            obj, support = as_tensor(res.object, dev), as_tensor(res.support, dev)
            hist = res.history["chi2"]
        else:
            on_grid, _ = to_model_grid(meas, model.input_size, bin_factor)
            tuned, losses = fine_tune(model, on_grid, step.steps, random_init=step.kind == "dip", seed=seed, progress=progress)
            obj, support = _to_measured_grid(tuned, transform, threshold)
            hist = np.array(losses, dtype=np.float32)
        current_chi2 = float(chi2(model_intensity(obj), meas, mask))
        timings[f"refine_{k}_{step.kind}_s"] = time.perf_counter() - t
        history[f"{k}_{step.kind}"] = np.asarray(hist, dtype=np.float32)
        chain.append({"stage": step.recipe or f"{step.kind}:{step.steps}", "chi2": current_chi2})

    twin = bool(align(nn_object, obj, upsample=1).twin) if steps else False
    timings["total_s"] = sum(timings.values())
    card = getattr(model, "card", {})
    return Result(
        object=obj.detach().cpu().numpy().astype(np.complex64),
        support=support.cpu().numpy().astype(bool),
        chi2=current_chi2,
        history=history,
        provenance={
            "method": "invert",
            "model": card.get("name", model.family),
            "model_family": model.family,
            "refine": refine or "none",
            "stages": chain,
            "prediction_is_twin_of_refined": twin,
            "grid_transform": transform.to_dict(),
            "threshold": threshold,
            "device": str(dev),
            "timings": timings,
            "version": cdinn.__version__,
        },
        extras={"prediction": nn_object.detach().cpu().numpy().astype(np.complex64)},
    )


def _to_measured_grid(raw: torch.Tensor, transform: Any, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    mapped = to_input_grid(raw, transform)
    obj, support = clean_prediction(mapped, threshold)
    if not bool(support.any()):
        raise InputError("the network predicted an empty object (no amplitude above the threshold)")
    return obj, support
