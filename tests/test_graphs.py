"""CUDA-graph replay of projection blocks (:mod:`cdinn.retrieval.graphs`).

On the CPU the record is the Python function itself, so everything but the capture runs here:
which iterations run eagerly and which as replays, the static object and support that the
records iterate on (copied in after a shrink-wrap, an AD block or a network step), the chi²
history, and the fallback when a capture fails. The capture itself runs where CUDA is present.
"""

import numpy as np
import pytest
import torch

from cdinn.retrieval import graphs, phase_retrieval
from cdinn.simulate import simulate_pattern

# Block counts that are not multiples of a record, an AD block that replaces the iterate, and
# shrink-wraps between replays of the same records (recipes run right to left).
RECIPE = "AVG**5 * ER**23 * (SUP * ER**10 * HIO**31)**2 * AD**3 * RAAR**12 * DM**11"


@pytest.fixture
def pattern(crystal2d):
    return simulate_pattern(crystal2d, photons=1e7, seed=1).numpy()


def _run(pattern, recipe=RECIPE, starts=2, device="cpu"):
    return phase_retrieval(pattern, recipe, starts=starts, batch=starts, seed=3, progress=False, device=device)


@pytest.fixture
def replays(monkeypatch):
    """Force the graph path on the CPU and count the replays of each record."""
    counts: dict[str, int] = {}
    monkeypatch.setattr(graphs, "enabled", lambda x: True)
    original = graphs.Graphs.record

    def record(self, key, algorithm, projector, params):
        found = original(self, key, algorithm, projector, params)
        if found is not None and not hasattr(found[0], "counted"):
            inner = found[0].replay

            def counted():
                counts[key] = counts.get(key, 0) + 1
                inner()

            found[0].replay, found[0].counted = counted, True
        return found

    monkeypatch.setattr(graphs.Graphs, "record", record)
    return counts


def test_replayed_blocks_give_the_plain_loops_iterates(pattern, replays, monkeypatch):
    graphed = _run(pattern)
    monkeypatch.setattr(graphs, "enabled", lambda x: False)
    plain = _run(pattern)
    assert graphed.history["chi2"].shape == plain.history["chi2"].shape == (5 + 23 + 2 * 41 + 3 + 12 + 11, 2)
    np.testing.assert_allclose(graphed.history["chi2"], plain.history["chi2"], rtol=2e-5, atol=1e-8)
    np.testing.assert_allclose(graphed.object, plain.object, rtol=1e-4, atol=1e-5 * np.abs(plain.object).max())
    np.testing.assert_array_equal(graphed.support, plain.support)
    # DM**11 (first): 1 eager + 1 replay; RAAR**12: 2 + 1; HIO**31 (new): 1 + 3, then (recorded) 1 + 3;
    # ER**10: all eager (no replay to fill); ER**23 (ER new): 3 + 2; AVG stays eager.
    assert replays == {"DM(beta=1)": 1, "RAAR(beta=0.85)": 1, "HIO(beta=0.9)": 6, "ER": 2}


def test_a_failed_capture_falls_back_to_the_plain_loop(pattern, monkeypatch):
    monkeypatch.setattr(graphs, "enabled", lambda x: True)

    def fail(self, body, device, pool=None):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs.Record, "__init__", fail)
    with pytest.warns(RuntimeWarning, match=r"capture of HIO\(beta=0.9\) failed") as caught:
        graphed = _run(pattern, "ER**12 * HIO**25", starts=1)
    assert len(caught) == 1  # ER is not tried after HIO failed
    monkeypatch.setattr(graphs, "enabled", lambda x: False)
    plain = _run(pattern, "ER**12 * HIO**25", starts=1)
    np.testing.assert_allclose(graphed.history["chi2"], plain.history["chi2"], rtol=2e-5, atol=1e-8)


def test_graphs_only_on_cuda_and_can_be_switched_off(monkeypatch):
    assert not graphs.enabled(torch.zeros(2, dtype=torch.complex64))
    if torch.cuda.is_available():
        x = torch.zeros(2, dtype=torch.complex64, device="cuda")
        assert graphs.enabled(x)
        monkeypatch.setenv(graphs.ENV, "0")
        assert not graphs.enabled(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the capture itself needs a CUDA GPU")
def test_captured_graphs_match_eager_cuda(pattern, monkeypatch):
    graphed = _run(pattern, device="cuda")
    monkeypatch.setenv(graphs.ENV, "0")
    plain = _run(pattern, device="cuda")
    np.testing.assert_allclose(graphed.history["chi2"], plain.history["chi2"], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(graphed.object, plain.object, rtol=1e-3, atol=1e-4 * np.abs(plain.object).max())
