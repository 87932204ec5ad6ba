import os

import numpy as np
import pytest
import torch

from cdinn.cli import threads
from cdinn.cli.main import main
from cdinn.io import read_result


def test_default_leaves_busy_cores_alone(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "_running_others", lambda: 0)
    assert threads.default_threads() == 4
    monkeypatch.setattr(threads, "_running_others", lambda: 3)
    assert threads.default_threads() == 1
    monkeypatch.setattr(threads, "_running_others", lambda: 9)
    assert threads.default_threads() == 1  # never fewer than one


def test_request_then_environment_then_default(monkeypatch):
    monkeypatch.setattr(threads, "default_threads", lambda: 5)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.choose_threads(None) == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.choose_threads(None) == 2 and threads.choose_threads(3) == 3


def test_training_leaves_the_data_workers_their_cores(tmp_path, monkeypatch):
    import cdinn.cli.train as train_cli

    monkeypatch.setattr(threads, "default_threads", lambda: 3)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.choose_threads(None, reserved=1) == 2 and threads.choose_threads(None, reserved=5) == 1
    assert threads.choose_threads(4, reserved=1) == 4  # asked for: as asked
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.choose_threads(None, reserved=1) == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    seen = []
    monkeypatch.setattr(train_cli, "train", lambda cfg, run_dir, **kw: seen.append(torch.get_num_threads()) or {})
    cfg = tmp_path / "c.toml"
    cfg.write_text('model = "cdinn2d"\narguments = { width = 4, size = 32 }\ndata = { n_train = 8, n_val = 2, workers = 1 }\n')
    before = torch.get_num_threads()
    for extra, expected in (([], 2), (["--workers", "0"], 3), (["--threads", "1"], 1)):
        assert main(["train", str(cfg), "--run-dir", str(tmp_path / "run"), "--device", "cpu", "-q", *extra]) == 0
        assert seen[-1] == expected, extra
    assert torch.get_num_threads() == before


def test_threads_option_is_applied_and_recorded(tmp_path, crystal2d, capsys):
    from cdinn.simulate import simulate_pattern

    np.save(tmp_path / "p.npy", simulate_pattern(crystal2d, photons=1e7, seed=0).numpy())
    torch.set_num_threads(2)
    assert main(["phase", str(tmp_path / "p.npy"), "-o", str(tmp_path / "r.h5"), "--recipe", "ER**5", "--threads", "1", "-q"]) == 0
    assert read_result(tmp_path / "r.h5").provenance["threads"] == 1
    assert torch.get_num_threads() == 2  # an in-process caller keeps its own count
    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as exc:
            main(["phase", str(tmp_path / "p.npy"), "-o", str(tmp_path / "s.h5"), "--threads", bad])
        assert exc.value.code == 2
    assert not (tmp_path / "s.h5").exists()


def test_process_tuning_keeps_the_users_settings(monkeypatch):
    import platform

    from cdinn.runtime import tune_allocator, tune_process

    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    tune_process()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "3"
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    tune_process()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    assert tune_allocator() == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
