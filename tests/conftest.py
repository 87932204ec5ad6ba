import os
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def crystal2d():
    from cdinn.simulate import faceted_crystal

    return faceted_crystal((64, 64), oversampling=2.5, phase_range=1.5, seed=3)


@pytest.fixture
def crystal3d():
    from cdinn.simulate import faceted_crystal

    return faceted_crystal((32, 32, 32), oversampling=2.0, phase_range=1.5, seed=5)


@pytest.fixture
def shared_data():
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip("../shared/data is not present")
    return path


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.fixture(autouse=True)
def _keep_thread_count():
    # CLI calls set torch's thread count (--threads); one test's choice must not slow the next.
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
