"""``invert``: pattern -> network prediction -> refinement -> result.

The pattern becomes one :class:`~cdinn.retrieval.state.Measurement` (the only conversion to a
device tensor). The network sees it at the oversampling it was trained on (binning and
resampling recorded in a grid transform); its prediction is cleaned (support, largest
component, centring, phase offset), mapped back onto the measured grid and becomes the start
of a :class:`~cdinn.retrieval.state.State`. The refinement is a recipe in the language of
``cdinn phase`` (ER, HIO, RAAR, DM, AVG, SUP, AD, TL, DIP), run by the one operator engine.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Hashable, Iterator, Mapping, Sequence

import numpy as np
import torch

import cdinn
from cdinn.errors import InputError
from cdinn.io.readers import available_memory
from cdinn.io.results import Result
from cdinn.models.base import CDIModel, inference_dtype
from cdinn.physics.fourier import far_field_modulus, match_norm
from cdinn.physics.metrics import chi2_amplitude
from cdinn.physics.noise import noise_floors
from cdinn.physics.support import grow_support
from cdinn.pipeline.network_refine import fine_tune
from cdinn.pipeline.postprocess import clean_prediction
from cdinn.pipeline.sampling import GridTransform, check_dimensionality, mask_to_model_grid, to_input_grid, to_model_grid
from cdinn.retrieval.engine import batch_pays, patterns_per_batch, phase_batch, phase_retrieval
from cdinn.retrieval.recipe import DEFAULT_RECIPE, RecipeError, Step, parse_recipe
from cdinn.retrieval.state import Measurement, State, run

DEFAULT_REFINE = "AVG**10 * ER**20 * SUP * (ER**10 * HIO**20 * SUP * BREAK(below=1.1))**2 * ER**10 * HIO**30"
"""What ``cdinn invert`` runs after the network unless told otherwise (see docs/design.md for
the measurement that chose it): HIO**30 and ER**10 from the network's start, then up to two more
shrink-wrapped HIO**20 + ER**10 blocks, left as soon as the last ER iteration's chi² is within
1.1x the counting-noise floor (the finishing SUP, ER**20 and AVG**10 take it below), 70-130
iterations."""

DEFAULT_DILATION = 2
"""Voxels by which the network's support is grown before refinement: a support that misses
part of the crystal traps ER, one slightly too large costs nothing that SUP does not fix
(60 tuning crystals, seeds 8000-8059: 85 % recovered with 1 voxel, 90 % with 2, 80 % with 3)."""

CONVERGED = 1.0
"""A refined result whose chi² exceeds this many times the counting-noise floor
(:func:`cdinn.physics.noise.noise_floor_chi2`, about the true object's chi²) fits the data worse
than the true object would: it has stagnated. A solution fits part of the noise as well: on the
60 tuning crystals (seeds 8000-8059) the recovered ones ended at 0.75-1.03 times the floor, the
stagnated ones at 0.87-1.96; with retries above 1.0 the default recovered 59 of 60 (1.10: 58,
0.95: 59 with more retries)."""

RETRIES = ({"recipe": "AVG**10 * ER**20 * SUP * (ER**10 * HIO**40 * SUP * BREAK)**3 * ER**10 * HIO**40", "dilation": 4},
           {"phase_seed": 0}, {"phase_seed": 1}, {"phase_seed": 2})
"""What the default refinement tries, in order, while the best result so far has not converged:
the network's support grown by 4 voxels with a longer HIO schedule (up to 190 iterations, left
for the final ER and AVG once it fits to the noise floor; recovered 5 of the 6 stagnated tuning
crystals), then ``cdinn phase``'s default from up to three random
starts (``seed + phase_seed``), one at a time. The lowest chi² of all attempts is kept."""

_LEGACY = {"er": "ER**{n}", "ad": "AD**{n}", "tl": "TL**{n}", "dip": "DIP**{n}"}


@functools.lru_cache(maxsize=64)  # a stack asks the same question once per pattern
def refinement_recipe(spec: str | None) -> str:
    """The recipe of a ``--refine`` value: a recipe as such, ``none`` -> ``""``, or the
    earlier chain forms (``er:50``, ``pr:150``, ``ad:N``, ``tl:N``, ``dip:N`` joined by ``+``,
    leftmost first), translated to the recipe they mean.

    ``pr:N`` is ``AVG**10 * ER**40 * (SUP * ER**10 * HIO**40)**k`` with ``k = (N - 50) / 50``.
    """
    if spec is None or spec.strip().lower() in ("", "none"):
        return ""
    if ":" not in spec and "+" not in spec:
        parse_recipe(spec)
        return spec
    recipes = []
    for part in spec.split("+"):
        kind, _, num = part.strip().partition(":")
        kind = kind.lower()
        if kind not in (*_LEGACY, "pr") or not num.isascii() or not num.isdigit() or not 1 <= int(num) <= 1_000_000:
            raise RecipeError(f"refinement {part.strip()!r}: write a recipe, e.g. ER**50, AD**100, TL**20 or "
                              "'ER**20 * HIO**40' (the chain form takes er/pr/ad/tl/dip:N with 1 <= N <= 1000000)")
        n = int(num)
        if kind == "pr":
            if n < 100:
                raise RecipeError(f"refinement {part.strip()!r}: pr needs at least 100 iterations")
            recipes.append(f"AVG**10*ER**40*(SUP*ER**10*HIO**40)**{(n - 50) // 50}")
        else:
            recipes.append(_LEGACY[kind].format(n=n))
    return " * ".join(f"({r})" for r in reversed(recipes))


def predict(model: CDIModel, patterns: torch.Tensor, binning: int = 1, masks: torch.Tensor | None = None,
            precision: str = "auto", shared: bool = False) -> tuple[torch.Tensor, list[GridTransform]]:
    """Network prediction for a batch of patterns ``(B, *spatial)`` of the same shape, in one
    network call.

    Each pattern is brought to the model's grid with its own oversampling estimate, so that a
    pattern's prediction does not depend on the others in its batch; with ``shared`` the batch
    shares one transform, estimated on its summed pattern (the frames of one stack, one
    geometry: one estimate from all their counts). Returns the raw complex predictions on the
    model's output grid and each pattern's grid transform. ``precision``: the network's
    arithmetic (:func:`cdinn.models.base.inference_dtype`).
    """
    check_dimensionality(patterns.ndim - 1, model.ndim, model.family)
    oversampling = model_oversampling(model)
    if shared:
        on_grid, transform = to_model_grid(patterns, model.input_size, binning, ndim=model.ndim, oversampling=oversampling, mask=masks)
        transforms = [transform] * len(patterns)
        grid_mask = None if masks is None else mask_to_model_grid(masks, transform)
    else:
        grids = [to_model_grid(p, model.input_size, binning, ndim=model.ndim, oversampling=oversampling,
                               mask=None if masks is None else masks[i]) for i, p in enumerate(patterns)]
        on_grid = torch.stack([g for g, _ in grids])
        transforms = [t for _, t in grids]
        grid_mask = None if masks is None else torch.stack([mask_to_model_grid(m, t) for m, t in zip(masks, transforms)])
    device = next(model.parameters()).device
    return model.predict(on_grid.to(device), None if grid_mask is None else grid_mask.to(device), precision), transforms


def _same_grid(transforms: Sequence[GridTransform]) -> list[list[int]]:
    """Indices of the patterns whose transforms map through the same grids (shapes and binning;
    their oversampling estimates, only recorded, may differ), in order."""
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(transforms):
        groups.setdefault((t.input_shape, t.resampled_shape, t.model_shape, t.binning), []).append(i)
    return list(groups.values())


def model_oversampling(model: CDIModel) -> tuple[float, float] | None:
    """The oversampling range a model was trained on (its card's ``oversampling_range``), if known."""
    rng = getattr(model, "card", {}).get("oversampling_range")
    return None if rng is None else (float(rng[0]), float(rng[1]))


class NetworkRefiner:
    """The TL and DIP operators: tune the network on the measurement, map its prediction back.

    Parameters
    ----------
    model : the network that made the prediction
    measurement : the pattern on the measured grid
    transform : how the pattern was brought to the model's grid
    threshold, dilation : as for the prediction's support
    seed : seed of DIP's random network
    """

    def __init__(self, model: CDIModel, measurement: Measurement, transform: GridTransform, binning: int,
                 threshold: float, dilation: int, seed: int):
        self.model, self.transform, self.threshold, self.dilation, self.seed = model, transform, threshold, dilation, seed
        self.on_grid, _ = to_model_grid(measurement.intensity, model.input_size, binning, oversampling=model_oversampling(model),
                                      mask=measurement.mask)
        self.mask = None if measurement.mask is None else mask_to_model_grid(measurement.mask, transform)

    def refine(self, state: State, step: Step, count: int) -> None:
        tuned, losses = fine_tune(self.model, self.on_grid, count, mask=self.mask, random_init=step.name == "DIP",
                                  seed=self.seed, lr=step.params["lr"])
        obj, support = to_measured_grid(tuned, self.transform, self.threshold, self.dilation)
        new = State.from_object(state.measurement, obj, support)
        state.x, state.support = new.x, new.support
        state.history.append(torch.tensor(losses, dtype=torch.float32, device=state.x.device).reshape(-1, 1))


def invert(
    pattern: np.ndarray | torch.Tensor,
    model: CDIModel,
    refine: str | None = DEFAULT_REFINE,
    mask: np.ndarray | None = None,
    binning: int = 1,
    threshold: float = 0.1,
    dilation: int = DEFAULT_DILATION,
    device: str | torch.device = "cpu",
    seed: int = 0,
    prediction: tuple[torch.Tensor, GridTransform, float] | None = None,
    progress: bool = False,
    precision: str = "auto",
    retry: bool | None = None,
) -> Result:
    """Invert one measured pattern with a network and refine the result.

    Parameters
    ----------
    pattern : measured intensity ``(*spatial)``
    model : a loaded network (:func:`cdinn.models.load_model`)
    refine : a recipe (``ER**50``, ``ER**20 * AD**10``, ``ER**10 * TL**3``, ...), ``none``, or
        the earlier chain forms (:func:`refinement_recipe`)
    mask : non-zero where a pixel was not measured
    binning : integer binning before the network
    threshold : support threshold of the prediction's amplitude
    dilation : voxels by which the prediction's support is grown before refinement (without
        refinement the result keeps the network's own support)
    prediction : a precomputed ``(raw prediction, transform, seconds)`` for this pattern (batched
        use; ``seconds`` is its share of the batch's network time, recorded as ``predict_s``)
    precision : the network's arithmetic, ``auto``, ``fp32`` or ``bf16``
        (:func:`cdinn.models.base.inference_dtype`; recorded)
    retry : when the refined chi² is more than :data:`CONVERGED` times the counting-noise floor,
        try :data:`RETRIES` and keep the lowest chi². ``None`` (default): only with the default
        refinement, so that an explicit recipe (``ER**50``, the paper's protocol) runs as written.
        Patterns that are not photon counts have no known floor and are never retried.

    Returns
    -------
    Result
        Object on the measured grid, support, chi², chi² history, per-stage chi² and timings,
        provenance (model, weights file, refinement recipe, grid transform with the measured
        and model oversampling, whether the prediction was the twin of the refined result).
    """
    recipe = refinement_recipe(refine)
    steps = parse_recipe(recipe) if recipe else []
    if dilation < 0:
        raise InputError(f"dilation must not be negative, got {dilation}")
    t0 = time.perf_counter()
    measurement = Measurement(pattern, mask, device)
    t = time.perf_counter()
    if prediction is None:
        masks = None if measurement.mask is None else measurement.mask.unsqueeze(0)
        raw, (transform,) = predict(model, measurement.intensity.unsqueeze(0), binning, masks, precision)
        raw, predict_s = raw[0], time.perf_counter() - t
    else:
        raw, transform, predict_s = prediction
    if not steps:
        done = network_results([measurement], raw.unsqueeze(0), [transform], model, threshold, [predict_s], precision)[0]
        if isinstance(done, InputError):
            raise done
        done.provenance["timings"]["total_s"] = time.perf_counter() - t0 + (predict_s if prediction is not None else 0.0)
        return done

    timings = {"predict_s": predict_s}
    t = time.perf_counter()
    obj, support = to_measured_grid(raw, transform, threshold, dilation)
    network = NetworkRefiner(model, measurement, transform, binning, threshold, dilation, seed) if any(
        s.name in ("TL", "DIP") for s in steps) else None
    state = State.from_object(measurement, obj, support, network)
    nn_object = state.objects()[0]
    state.stages.append({"stage": "network", "chi2": float(state.chi2()[0]), "seconds": predict_s})
    timings["postprocess_s"] = time.perf_counter() - t

    t = time.perf_counter()
    run(state, steps, progress=progress)
    timings["refine_s"] = time.perf_counter() - t
    best = (state.objects()[0], state.supports()[0], float(state.chi2()[0]), state.chi2_history()[:, 0])
    floor = measurement.noise_floor
    attempts: list[dict] = []
    if (recipe == refinement_recipe(DEFAULT_REFINE) if retry is None else retry) and floor is not None:
        best = retry_until_converged(measurement, raw, transform, threshold, seed, floor, best, attempts, state.stages)
        timings["retry_s"] = sum(a["seconds"] for a in attempts)
    timings["total_s"] = time.perf_counter() - t0 + (predict_s if prediction is not None else 0.0)
    provenance = {"refine": recipe, "stages": state.stages, "retries": attempts,
                  "prediction_is_twin_of_refined": is_twin(nn_object, best[0]), "dilation": dilation}
    return _result(model, measurement, transform, best, nn_object, floor, provenance, threshold, precision, timings)


def network_results(measurements: Sequence[Measurement], raw: torch.Tensor, transforms: Sequence[GridTransform],
                    model: CDIModel, threshold: float, seconds: Sequence[float],
                    precision: str = "auto") -> list[Result | InputError]:
    """The network alone (``--refine none``) for patterns of one shape, each step on the whole batch.

    Every raw prediction ``(B, *out)`` is mapped back onto its measured grid and cleaned
    (:func:`to_measured_grid`'s steps), scaled to its pattern's norm (as a refinement would
    start from it), and gets its chi² and counting-noise floor. ``seconds``: each pattern's
    network time. ``transforms``: each pattern's, all through the same grids
    (:func:`_same_grid`). Returns a :class:`Result` per pattern, or an :class:`InputError` for
    an empty prediction.
    """
    t = time.perf_counter()
    ndim = measurements[0].ndim
    dims = tuple(range(1, ndim + 1))
    intensity = torch.stack([m.intensity for m in measurements])
    masks = None if all(m.mask is None for m in measurements) else torch.stack(
        [torch.zeros_like(m.intensity, dtype=torch.bool) if m.mask is None else m.mask for m in measurements])
    obj, support = clean_prediction(to_input_grid(raw, transforms[0]), threshold, ndim)
    amplitude = intensity.clamp_min(0).sqrt()
    weight = None if masks is None else (~masks).to(amplitude.dtype)
    match_norm(obj, (amplitude if weight is None else amplitude * weight).square().sum(dim=dims), ndim)
    chi2 = chi2_amplitude(far_field_modulus(obj, ndim), amplitude, weight, ndim).tolist()
    floors = noise_floors(intensity, masks, ndim=ndim)
    share = (time.perf_counter() - t) / len(measurements)
    nonempty = support.flatten(start_dim=1).any(dim=1).tolist()
    results: list[Result | InputError] = []
    for i, measurement in enumerate(measurements):
        if not nonempty[i]:
            results.append(InputError("the network predicted an empty object (no amplitude above the threshold)"))
            continue
        provenance = {"refine": "", "stages": [{"stage": "network", "chi2": chi2[i], "seconds": seconds[i]}],
                      "retries": [], "prediction_is_twin_of_refined": False, "dilation": 0}
        timings = {"predict_s": seconds[i], "postprocess_s": share, "refine_s": 0.0, "total_s": seconds[i] + share}
        best = (obj[i], support[i], chi2[i], np.zeros(0, dtype=np.float32))
        # the network's object is the result: the prediction shares its memory
        results.append(_result(model, measurement, transforms[i], best, obj[i], floors[i], provenance, threshold,
                               precision, timings))
    return results


def _result(model: CDIModel, measurement: Measurement, transform: GridTransform,
            best: tuple[torch.Tensor, torch.Tensor, float, np.ndarray], prediction: torch.Tensor, floor: float | None,
            provenance: dict, threshold: float, precision: str, timings: dict[str, float]) -> Result:
    """The :class:`Result` of an inversion: ``best`` = (object, support, chi², chi² history)."""
    final, support, chi2, history = best
    card = getattr(model, "card", {})
    return Result(
        object=final.cpu().numpy().astype(np.complex64, copy=False),
        support=support.cpu().numpy().astype(bool, copy=False),
        chi2=chi2,
        history={"chi2": np.asarray(history)},
        provenance={
            "method": "invert",
            "model": card.get("name", model.family),
            "model_family": model.family,
            "model_weights": card.get("weights", ""),
            "model_sha256": card.get("weights_sha256", ""),
            "refine": provenance["refine"] or "none",
            "stages": provenance["stages"],
            "chi2_noise_floor": floor,
            "chi2_over_noise_floor": None if floor is None else chi2 / floor,
            "retries": provenance["retries"],
            "prediction_is_twin_of_refined": provenance["prediction_is_twin_of_refined"],
            "grid_transform": transform.to_dict(),
            "threshold": threshold,
            "dilation": provenance["dilation"],
            "device": str(measurement.device),
            "precision": str(inference_dtype(measurement.device, precision)).removeprefix("torch."),
            "threads": torch.get_num_threads(),
            "masked_pixels": 0 if measurement.mask is None else int(measurement.mask.sum()),
            "timings": timings,
            "version": cdinn.__version__,
        },
        extras={"prediction": prediction.cpu().numpy().astype(np.complex64, copy=False)},
    )


def retry_until_converged(measurement: Measurement, raw: torch.Tensor, transform: GridTransform, threshold: float,
                          seed: int, floor: float, best: tuple[torch.Tensor, torch.Tensor, float, np.ndarray],
                          attempts: list[dict], stages: list[dict]) -> tuple[torch.Tensor, torch.Tensor, float, np.ndarray]:
    """Try :data:`RETRIES` in order while the best result's chi² exceeds :data:`CONVERGED` times
    the noise ``floor``; return the lowest-chi² ``(object, support, chi2, history)``.

    Each attempt is appended to ``attempts`` and to ``stages``.
    """
    for best in retry_steps(measurement, raw, transform, threshold, seed, floor, best, attempts, stages):
        pass
    return best


def retry_steps(measurement: Measurement, raw: torch.Tensor, transform: GridTransform, threshold: float, seed: int,
                floor: float, best: tuple[torch.Tensor, torch.Tensor, float, np.ndarray], attempts: list[dict],
                stages: list[dict]) -> Iterator[tuple[torch.Tensor, torch.Tensor, float, np.ndarray]]:
    """:func:`retry_until_converged` one attempt at a time: yields the best ``(object, support,
    chi2, history)`` after each attempt, and stops once it is within the floor or
    :data:`RETRIES` are spent. Each attempt is appended to ``attempts`` and ``stages``."""
    for bests in retry_batches([measurement], raw.unsqueeze(0), [transform], threshold, seed, [floor], [best], [attempts],
                               [stages]):
        yield bests[0]


def retry_batches(measurements: Sequence[Measurement], raw: torch.Tensor, transforms: Sequence[GridTransform],
                  threshold: float, seed: int, floors: Sequence[float | None],
                  bests: list[tuple[torch.Tensor, torch.Tensor, float, np.ndarray]], attempts: Sequence[list[dict]],
                  stages: Sequence[list[dict]]) -> Iterator[list[tuple[torch.Tensor, torch.Tensor, float, np.ndarray]]]:
    """:data:`RETRIES` for patterns of one shape: each attempt runs once for all the patterns
    whose best chi² is still above :data:`CONVERGED` times their floor (a pattern without a
    floor is never retried), as one batch when there are several (:meth:`Measurement.stacked`,
    :func:`~cdinn.retrieval.engine.phase_batch`), as :func:`invert` runs it when there is one.
    Updates ``bests`` in place (the lowest chi² kept) and yields it after each attempt; each
    attempt is appended to the pattern's ``attempts`` and ``stages`` (time: its share of the batch).

    ``raw`` ``(N, *out)``: the network's predictions; ``transforms``: their grid transforms.
    """
    pending = range(len(measurements))
    for attempt in RETRIES:
        pending = [k for k in pending if floors[k] is not None and bests[k][2] > CONVERGED * floors[k]]
        if not pending:
            return
        t = time.perf_counter()
        group = [measurements[k] for k in pending]
        if "phase_seed" in attempt:
            start = seed + attempt["phase_seed"]
            done = ([phase_retrieval(group[0], DEFAULT_RECIPE, seed=start, progress=False)] if len(group) == 1
                    else phase_batch(group, DEFAULT_RECIPE, [start] * len(group)))
            found = [(torch.from_numpy(d.object), torch.from_numpy(d.support), d.chi2, d.history["chi2"][:, 0]) for d in done]
            label = f"cdinn phase default, seed {start}"
        else:
            grids = [to_measured_grid(raw[k], transforms[k], threshold, attempt["dilation"]) for k in pending]
            measurement = group[0] if len(group) == 1 else Measurement.stacked(group)
            retried = run(State.from_object(measurement, torch.stack([o for o, _ in grids]), torch.stack([m for _, m in grids])),
                          parse_recipe(attempt["recipe"]))
            objects, supports, chi2, history = retried.objects(), retried.supports(), retried.chi2().tolist(), retried.chi2_history()
            found = [(objects[j], supports[j], chi2[j], history[:, j]) for j in range(len(pending))]
            label = f"{attempt['recipe']}, support grown by {attempt['dilation']}"
        seconds = (time.perf_counter() - t) / len(pending)
        for k, (obj, support, chi2_k, history_k) in zip(pending, found):
            kept = chi2_k < bests[k][2]
            attempts[k].append({"attempt": label, "chi2": chi2_k, "kept": kept, "seconds": seconds})
            stages[k].append({"stage": f"retry: {label}", "chi2": chi2_k, "seconds": seconds})
            if kept:
                device = measurements[k].device
                bests[k] = (obj.to(device), support.to(device), chi2_k, history_k)
        yield bests


def needs_retry(result: Result) -> bool:
    """Whether the default refinement would retry ``result``: its chi² is above :data:`CONVERGED`
    times the counting-noise floor (never for a pattern that is not photon counts)."""
    ratio = result.provenance.get("chi2_over_noise_floor")
    return ratio is not None and ratio > CONVERGED


def later_retries(pattern: np.ndarray | torch.Tensor, mask: np.ndarray | None, model: CDIModel, first: Result,
                  threshold: float = 0.1, binning: int = 1, seed: int = 0, device: str | torch.device = "cpu",
                  precision: str = "auto") -> Iterator[Result]:
    """The retries of :func:`invert`'s default refinement, run after its first result was used.

    ``first`` is :func:`invert`'s result for this pattern with ``retry=False``. Yields it updated
    after each attempt (the lowest chi² kept; attempts and stages recorded as :func:`invert`
    records them), so that the final result is the one ``retry=True`` gives. ``cdinn watch``
    runs one attempt at a time between scans: a stagnated scan's first result is not held
    back, nor are the scans after it.
    """
    t0 = time.perf_counter()
    measurement = Measurement(pattern, mask, device)
    floor = first.provenance["chi2_noise_floor"]
    if floor is None:
        return
    masks = None if measurement.mask is None else measurement.mask.unsqueeze(0)
    raw, (transform,) = predict(model, measurement.intensity.unsqueeze(0), binning, masks, precision)
    device = measurement.device
    best = (torch.from_numpy(first.object).to(device), torch.from_numpy(first.support).to(device), float(first.chi2),
            np.asarray(first.history["chi2"]))
    prediction = torch.from_numpy(first.extras["prediction"]).to(device)
    attempts: list[dict] = []
    stages = list(first.provenance["stages"])
    for best in retry_steps(measurement, raw[0], transform, threshold, seed, floor, best, attempts, stages):
        provenance = dict(first.provenance, stages=list(stages), retries=list(attempts), chi2_over_noise_floor=best[2] / floor,
                          prediction_is_twin_of_refined=is_twin(prediction, best[0]),
                          timings=dict(first.provenance["timings"], retry_s=time.perf_counter() - t0))
        yield Result(object=best[0].cpu().numpy().astype(np.complex64, copy=False),
                     support=best[1].cpu().numpy().astype(bool, copy=False), chi2=best[2],
                     history={"chi2": np.asarray(best[3])}, provenance=provenance, extras=first.extras)


CPU_BATCH_VOXELS = 2**19
"""Input voxels per network call on a CPU: bigger batches leave the cache. Measured on 2 cores
(patterns per second or ms per pattern, bf16 / fp32): the 64³ AutoPhaseNN 28 / 48 ms at 2 per
call, 38 / 91 ms at 32 (and 168 ms at 1 in fp32); the 64² CDI NN 423 / 304 per s at 64 per
call, 362 / 169 at 256."""


def network_batch(model: CDIModel, device: torch.device | str = "cpu", max_batch: int = 512) -> int:
    """Patterns per network call: on a CPU :data:`CPU_BATCH_VOXELS` of input (at least 2); on a
    GPU what a quarter of the available memory (at most 2 GiB) holds, counting ~64 float32 copies
    of the model's input per pattern for the activations."""
    voxels = float(model.input_size ** model.ndim)
    if torch.device(device).type == "cpu":
        return int(max(2, min(max_batch, CPU_BATCH_VOXELS // voxels)))
    budget = min(available_memory() / 4, 2 * 2**30)
    return int(max(1, min(max_batch, budget // (voxels * 4 * 64))))


def invert_stack(
    stack: np.ndarray,
    mask: np.ndarray | None,
    model: CDIModel,
    refine: str | None = DEFAULT_REFINE,
    batch: int | None = None,
    **options,
) -> Iterator[tuple[int, Result | InputError]]:
    """Invert a stack of patterns ``(N, *spatial)`` in network batches sized to memory
    (:func:`network_batch`), each pattern refined on its own; results in order. ``stack`` is
    an array or a stack read where indexed (:class:`cdinn.io.readers.FrameStack`): one slice
    of it is read per batch.

    ``mask`` is shared ``(*spatial)`` or per pattern ``(N, *spatial)``; ``options`` as for
    :func:`invert_many`.
    """
    per_pattern = mask is not None and mask.shape == stack.shape
    size = batch or network_batch(model, options.get("device", "cpu"))
    for start in range(0, len(stack), size):
        block = stack[start:start + size]  # one read per batch: a mapped or HDF5 stack reads these frames only
        chunk = {start + k: (block[k], mask[start + k] if per_pattern else mask) for k in range(len(block))}
        yield from invert_many(chunk, model, refine, shared_grid=True, **options)


def invert_many(
    patterns: Mapping[Hashable, tuple[np.ndarray, np.ndarray | None]],
    model: CDIModel,
    refine: str | None = DEFAULT_REFINE,
    binning: int = 1,
    threshold: float = 0.1,
    dilation: int = DEFAULT_DILATION,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = False,
    precision: str = "auto",
    retry: bool | None = None,
    batch_refine: bool | None = None,
    shared_grid: bool = False,
) -> Iterator[tuple[Hashable, Result | InputError]]:
    """Invert several patterns: those of one shape go through the network together (in calls of
    :func:`network_batch` patterns), then each is refined on its own (:func:`invert`); results
    come as each is done. With ``batch_refine`` the patterns of a network call are refined
    together instead (:func:`refine_batch`).

    Parameters
    ----------
    patterns : name -> (intensity, mask or None)
    model, refine, binning, threshold, dilation, device, seed, progress, precision, retry : as for :func:`invert`
    batch_refine : refine each network call's patterns as one batch; ``None`` (default): where
        that pays (:func:`cdinn.retrieval.engine.batch_pays`), and never for TL or DIP, which
        tune the network per pattern
    shared_grid : the patterns of a network call share one oversampling estimate, made on
        their sum (:func:`predict`'s ``shared``; for the frames of one stack). By default each
        pattern has its own, and its result does not depend on the other patterns given.

    Yields
    ------
    (name, Result), or (name, InputError) for a pattern that could not be inverted
    """
    if dilation < 0:
        error = InputError(f"dilation must not be negative, got {dilation}")
        yield from ((name, error) for name in patterns)
        return
    recipe = refinement_recipe(refine)
    network_only = not recipe
    steps = parse_recipe(recipe) if recipe else []
    tunes_network = any(s.name in ("TL", "DIP") for s in steps)
    groups: dict[tuple[int, ...], list[Hashable]] = defaultdict(list)
    for name, (pattern, _) in patterns.items():
        groups[tuple(np.shape(pattern))].append(name)
    predictions: dict[Hashable, tuple[torch.Tensor, GridTransform, float] | Result | InputError] = {}
    size = network_batch(model, device)
    for group in groups.values():
        for names in (group[i:i + size] for i in range(0, len(group), size)):
            batch = torch.stack([torch.as_tensor(np.asarray(patterns[n][0], dtype=np.float32)) for n in names]).to(device)
            masks = None
            if any(patterns[n][1] is not None for n in names):
                masks = torch.stack([torch.zeros(batch.shape[1:], dtype=torch.bool) if patterns[n][1] is None
                                     else torch.as_tensor(np.asarray(patterns[n][1]) != 0) for n in names]).to(device)
            t = time.perf_counter()
            try:
                raw, transforms = predict(model, batch, binning, masks, precision, shared=shared_grid)
            except InputError as exc:
                predictions.update({n: exc for n in names})
                continue
            share = (time.perf_counter() - t) / len(names)  # each pattern's share of its batch
            batched = not network_only and not tunes_network and (
                batch_pays(int(np.prod(batch.shape[1:])), device) if batch_refine is None else batch_refine)
            if not network_only and not batched:
                predictions.update({n: (raw[i], transforms[i], share) for i, n in enumerate(names)})
                continue
            for rows in _same_grid(transforms):  # each call below maps its patterns through one grid
                members, grids = [names[i] for i in rows], [transforms[i] for i in rows]
                if network_only:  # the whole group at once, not pattern by pattern
                    predictions.update(_network_batch(patterns, members, raw[rows], grids, model, threshold, share, device,
                                                      precision))
                    continue
                size_refine = patterns_per_batch(int(np.prod(batch.shape[1:])), device)
                for lo in range(0, len(rows), size_refine):
                    part = slice(lo, lo + size_refine)
                    done = refine_batch([patterns[n] for n in members[part]], raw[rows[part]], grids[part], share, model,
                                        recipe, threshold, dilation, device, seed, precision, retry)
                    predictions.update(zip(members[part], done))
    for name, (pattern, mask) in patterns.items():
        done = predictions[name]
        if isinstance(done, (InputError, Result)):
            yield name, done
            continue
        try:
            yield name, invert(pattern, model, refine, mask=mask, binning=binning, threshold=threshold, dilation=dilation,
                               device=device, seed=seed, prediction=done, progress=progress,
                               precision=precision, retry=retry)
        except InputError as exc:
            yield name, exc


def refine_batch(patterns: Sequence[tuple[np.ndarray, np.ndarray | None]], raw: torch.Tensor,
                 transforms: Sequence[GridTransform], predict_s: float, model: CDIModel, recipe: str, threshold: float = 0.1,
                 dilation: int = DEFAULT_DILATION, device: str | torch.device = "cpu", seed: int = 0,
                 precision: str = "auto", retry: bool | None = None) -> list[Result | InputError]:
    """The refinement of :func:`invert` for N patterns of one shape at once: one state whose
    measurement is the N patterns (:meth:`Measurement.stacked`), item ``i`` of the iterate
    against pattern ``i``, so every operator of ``recipe`` runs once on the batch.

    A BREAK in ``recipe`` leaves its loop when every pattern of the batch has converged (one
    pattern alone may leave it earlier: its result can then differ from :func:`invert`'s).

    ``raw`` ``(N, *out)``: the network's predictions; ``transforms``: each pattern's grid transform;
    ``predict_s``: each pattern's share of the network time. Retries (:data:`RETRIES`) run
    afterwards, pattern by pattern, for those above their counting-noise floor. Returns a
    :class:`Result` per pattern (its stages, chi² history and timings its own; batch times
    shared equally), or an :class:`InputError`; TL and DIP need :func:`invert`.
    """
    t0 = time.perf_counter()
    steps = parse_recipe(recipe)
    if any(s.name in ("TL", "DIP") for s in steps):
        raise ValueError("TL and DIP tune the network per pattern: refine with invert()")
    out: list[Result | InputError] = [InputError("not refined")] * len(patterns)
    kept, measurements, starts = [], [], []
    for i, (pattern, mask) in enumerate(patterns):
        try:
            measurement = Measurement(pattern, mask, device)
            starts.append(to_measured_grid(raw[i], transforms[i], threshold, dilation))
        except InputError as exc:
            out[i] = exc
            continue
        kept.append(i)
        measurements.append(measurement)
    if not kept:
        return out
    stacked = Measurement.stacked(measurements)
    state = State.from_object(stacked, torch.stack([o for o, _ in starts]), torch.stack([m for _, m in starts]))
    nn_objects = state.objects()
    first = state.chi2()
    state.stages.append({"stage": "network", "chi2": float(first.min()), "chi2_each": first.tolist(), "seconds": predict_s})
    postprocess_s = (time.perf_counter() - t0) / len(kept)
    t = time.perf_counter()
    run(state, steps)
    refine_s = (time.perf_counter() - t) / len(kept)
    objects, supports, chi2, history = state.objects(), state.supports(), state.chi2().tolist(), state.chi2_history()
    floors = stacked.floors  # computed once: a BREAK in the recipe may have asked already
    retrying = recipe == refinement_recipe(DEFAULT_REFINE) if retry is None else retry
    stages = [[{"stage": st["stage"], "chi2": st["chi2_each"][k],
                "seconds": st["seconds"] if st["stage"] == "network" else st["seconds"] / len(kept)}
               for st in state.stages] for k in range(len(kept))]
    bests = [(objects[k], supports[k], chi2[k], history[:, k]) for k in range(len(kept))]
    attempts: list[list[dict]] = [[] for _ in kept]
    if retrying:  # the patterns still above their floor retried together, attempt by attempt
        for _ in retry_batches(measurements, raw[kept], [transforms[i] for i in kept], threshold, seed, floors, bests,
                               attempts, stages):
            pass
    for k, i in enumerate(kept):
        timings = {"predict_s": predict_s, "postprocess_s": postprocess_s, "refine_s": refine_s}
        if retrying and floors[k] is not None:
            timings["retry_s"] = sum(a["seconds"] for a in attempts[k])
        timings["total_s"] = predict_s + postprocess_s + refine_s + timings.get("retry_s", 0.0)
        provenance = {"refine": recipe, "stages": stages[k], "retries": attempts[k],
                      "prediction_is_twin_of_refined": is_twin(nn_objects[k], bests[k][0]), "dilation": dilation}
        out[i] = _result(model, measurements[k], transforms[i], bests[k], nn_objects[k], floors[k], provenance, threshold,
                         precision, timings)
    return out


def _network_batch(patterns: Mapping[Hashable, tuple[np.ndarray, np.ndarray | None]], names: Sequence[Hashable],
                   raw: torch.Tensor, transforms: Sequence[GridTransform], model: CDIModel, threshold: float,
                   share: float, device: str | torch.device, precision: str) -> dict[Hashable, Result | InputError]:
    """:func:`network_results` for one network batch of :func:`invert_many`; a pattern that is
    not a valid measurement gets its error."""
    done: dict[Hashable, Result | InputError] = {}
    measured: dict[Hashable, tuple[int, Measurement]] = {}
    for i, name in enumerate(names):
        try:
            measured[name] = (i, Measurement(*patterns[name], device))
        except InputError as exc:
            done[name] = exc
    if measured:
        rows = [i for i, _ in measured.values()]
        found = network_results([m for _, m in measured.values()], raw[rows], [transforms[i] for i in rows], model,
                                threshold, [share] * len(rows), precision)
        done.update(zip(measured, found))
    return done


def is_twin(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a``'s amplitude matches ``b``'s better inverted through the centre (the twin
    image) than as it is, at the best translation of each (two cross-correlations by FFT)."""
    dims, shape = tuple(range(a.ndim)), a.shape
    # real amplitudes: half-spectrum transforms, real correlations (64³: 10.2 -> 7.5 ms)
    fa = torch.fft.rfftn(a.abs(), dim=dims)
    fb = torch.fft.rfftn(b.abs(), dim=dims).conj_physical_()
    # The amplitude inverted through the origin has the conjugate transform (it is real).
    direct = torch.fft.irfftn(fa * fb, s=shape, dim=dims).max()
    inverted = torch.fft.irfftn(fa.conj_physical_().mul_(fb), s=shape, dim=dims).max()
    return bool(inverted > direct)


def to_measured_grid(raw: torch.Tensor, transform: GridTransform, threshold: float,
                     dilation: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A raw prediction on the model's grid -> cleaned object and (dilated) support on the measured grid."""
    obj, support = clean_prediction(to_input_grid(raw, transform), threshold, len(transform.input_shape))
    if not bool(support.any()):
        raise InputError("the network predicted an empty object (no amplitude above the threshold)")
    return obj, grow_support(support, dilation)
