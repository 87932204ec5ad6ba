"""Sharded HDF5 datasets: content, determinism, sharding, resume after interruption, reader."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cdinn.cli.main import main
from cdinn.errors import InputError
from cdinn.simulate import SimulatedDataset, SimulationConfig, simulate_rows, write_dataset

ARRAYS = ("intensity", "amplitude", "phase", "support")
CONFIG = SimulationConfig("polygons", object_size=16, oversampling=2.0, photons=(1e4, 1e6), seed=9)


def _read_all(directory):
    """Every shard's arrays and columns, concatenated in shard order."""
    out = {}
    for path in sorted(Path(directory).glob("shard-*.h5")):
        with h5py.File(path, "r") as f:
            for key in ARRAYS + ("index",):
                out.setdefault(key, []).append(f[key][()])
            for name, dset in f["params"].items():
                out.setdefault(f"params/{name}", []).append(dset[()])
    return {k: np.concatenate(v) for k, v in out.items()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    directory = tmp_path_factory.mktemp("reference")
    assert write_dataset(directory, CONFIG, 40, shard_size=16, workers=0, progress=False) == 40
    return directory


def test_layout_content_and_metadata(reference):
    names = sorted(p.name for p in reference.iterdir())
    assert names == ["manifest.json", "shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    data = _read_all(reference)
    np.testing.assert_array_equal(data["index"], np.arange(40))
    assert data["intensity"].shape == (40, 32, 32) and data["intensity"].dtype == np.float32
    assert data["amplitude"].shape == (40, 16, 16) and data["support"].dtype == bool
    row = simulate_rows(CONFIG, 17)[0]  # sample i depends only on (seed, i)
    for key in ARRAYS:
        np.testing.assert_array_equal(data[key][17], row[key])
    with h5py.File(reference / "shard-00001.h5", "r") as f:
        assert f.attrs["generator"] == "polygons" and f.attrs["seed"] == 9 and f.attrs["version"]
        assert SimulationConfig.from_dict(json.loads(f.attrs["config"])) == CONFIG
        assert f["intensity"].compression == "gzip" and f["intensity"].chunks == (1, 32, 32)
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["n_samples"] == 40 and manifest["shard_size"] == 16


def test_workers_and_job_array_shards_give_the_same_dataset(reference, tmp_path):
    write_dataset(tmp_path, CONFIG, 40, shard_size=16, shard=(1, 2), workers=2, progress=False)
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == ["shard-00001.h5"]
    write_dataset(tmp_path, CONFIG, 40, shard_size=16, shard=(0, 2), workers=0, progress=False)
    _assert_same(_read_all(tmp_path), _read_all(reference))


def test_interrupted_run_resumes_to_the_identical_dataset(reference, tmp_path):
    assert write_dataset(tmp_path, CONFIG, 40, shard_size=16, workers=0, progress=False, max_samples=21) == 21
    assert (tmp_path / "shard-00001.h5.partial").exists() and not (tmp_path / "shard-00001.h5").exists()
    with h5py.File(tmp_path / "shard-00001.h5.partial", "r") as f:
        assert f.attrs["samples_done"] == 5
    assert write_dataset(tmp_path, CONFIG, 40, shard_size=16, workers=2, progress=False) == 19
    assert not list(tmp_path.glob("*.partial"))
    _assert_same(_read_all(tmp_path), _read_all(reference))
    assert write_dataset(tmp_path, CONFIG, 40, shard_size=16, workers=0, progress=False) == 0  # nothing left


def test_killed_process_resumes_without_loss_or_duplicates(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "cdinn.cli.main", "simulate", "polygons", "-n", "1500", "-o", str(out),
           "--object-size", "16", "--seed", "4", "--shard-size", "500", "--workers", "1", "-q"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out / "shard-00000.h5.partial"
    deadline = time.monotonic() + 60
    # Kill between two blocks of rows, in the middle of the first shard.
    while not (partial.exists() and partial.stat().st_size > 100_000) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list(out.glob("shard-*.h5"))) < 3  # the run was cut short
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    data = _read_all(out)
    np.testing.assert_array_equal(data["index"], np.arange(1500))
    config = SimulationConfig("polygons", object_size=16, seed=4)
    for i in np.random.default_rng(0).choice(1500, 12, replace=False):
        row = simulate_rows(config, int(i))[0]
        for key in ARRAYS:
            np.testing.assert_array_equal(data[key][i], row[key])


def test_unreadable_partial_shard_is_remade(reference, tmp_path):
    write_dataset(tmp_path, CONFIG, 40, shard_size=16, workers=0, progress=False, max_samples=20)
    (tmp_path / "shard-00001.h5.partial").write_bytes(b"killed in the middle of a write")
    assert write_dataset(tmp_path, CONFIG, 40, shard_size=16, workers=0, progress=False) == 24
    _assert_same(_read_all(tmp_path), _read_all(reference))


def test_other_settings_in_the_same_directory_are_refused(reference):
    other = SimulationConfig("polygons", object_size=16, oversampling=2.0, photons=(1e4, 1e6), seed=10)
    with pytest.raises(InputError, match="other settings"):
        write_dataset(reference, other, 40, shard_size=16, workers=0, progress=False)
    with pytest.raises(InputError):
        write_dataset(reference, CONFIG, 40, shard=(2, 2), workers=0, progress=False)


def test_reader_yields_torch_batches(reference):
    ds = SimulatedDataset(reference)
    assert len(ds) == 40 and ds.config == CONFIG and "photons" in ds.param_names
    item = ds[-1]
    assert int(item["index"]) == 39 and item["params"].shape == (len(ds.param_names),)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, num_workers=2)
    batches = list(loader)
    assert batches[0]["intensity"].shape == (8, 32, 32) and batches[0]["support"].dtype == torch.bool
    assert sorted(torch.cat([b["index"] for b in batches]).tolist()) == list(range(40))
    assert set(SimulatedDataset(reference, keys=("intensity",))[0]) == {"intensity", "index", "params"}


def test_reader_skips_partial_shards_and_needs_one_complete(tmp_path):
    with pytest.raises(InputError):
        SimulatedDataset(tmp_path)
    write_dataset(tmp_path, CONFIG, 40, shard_size=16, workers=0, progress=False, max_samples=20)
    assert len(SimulatedDataset(tmp_path)) == 16


def test_cli_simulate(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["simulate", "superellipsoids", "-n", "3", "-o", str(out), "--object-size", "12", "--oversampling", "1.5",
            "--photons", "1e5:1e6", "--augment", "--resample", "0.7:1", "--workers", "0", "-q"]  # fmt: skip
    assert main(args) == 0
    assert "3 new sample(s)" in capsys.readouterr().out
    ds = SimulatedDataset(out)
    assert ds[0]["intensity"].shape == (18, 18, 18) and {"resample", "sym_perm"} <= set(ds.param_names)
    assert main(args) == 0 and "0 new sample(s)" in capsys.readouterr().out
    assert main(["simulate", "polygons", "-n", "2", "-o", str(tmp_path / "bad"), "--photons", "5:1"]) == 2
    assert "photon range" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "bad" / "manifest.json")


def test_two_writers_and_rotten_shards_are_caught(tmp_path):
    import subprocess
    import sys

    from cdinn.simulate.dataset import verify_shards

    # A second `cdinn simulate` into the same folder fails in one line while the first writes.
    cmd = [sys.executable, "-m", "cdinn.cli.main", "simulate", "faceted", "-n", "6000", "--shard-size", "6000",
           "--object-size", "32", "--ndim", "2", "-o", str(tmp_path / "d"), "-q"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list((tmp_path / "d").glob(".shard-*.lock")) and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(cmd, capture_output=True, text=True)
    assert first.wait(timeout=120) == 0
    assert second.returncode == 2 and "another cdinn simulate" in second.stderr and second.stderr.count("\n") == 1
    assert len(SimulatedDataset(tmp_path / "d")) == 6000 and not list((tmp_path / "d").glob(".*"))
    # Complete shards carry checksums: a truncated or deleted one is named, and a rerun remakes it.
    write_dataset(tmp_path / "e", CONFIG, 48, shard_size=16, workers=0, progress=False)
    shard = tmp_path / "e" / "shard-00001.h5"
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match="shard-00001.h5: truncated or corrupt"):
        verify_shards(tmp_path / "e")
    assert write_dataset(tmp_path / "e", CONFIG, 48, shard_size=16, workers=0, progress=False) == 16
    assert shard.read_bytes() == good  # the same samples again
    shard.unlink()
    from cdinn.train.data import ShardPatterns

    with pytest.raises(InputError, match="shard-00001.h5 is missing"):
        ShardPatterns(str(tmp_path / "e"), 32, 16)


def test_a_second_writer_leaves_the_first_ones_partial_shard_alone(tmp_path):
    """While another process holds a shard's lock, its partial file may be mid-write (HDF5 cannot
    open it): a second run must fail in one line without reading or deleting it. It used to read
    the partial to plan its work and delete it when unreadable, which failed the first writer."""
    import fcntl

    from cdinn.simulate.dataset import shard_path

    directory = tmp_path / "d"
    directory.mkdir()
    partial = shard_path(directory, 0).with_name(shard_path(directory, 0).name + ".partial")
    partial.write_bytes(b"not yet a complete HDF5 file")
    lock = os.open(shard_path(directory, 0).with_name(f".{shard_path(directory, 0).name}.lock"), os.O_CREAT | os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)  # the other writer
    try:
        with pytest.raises(InputError, match="being written by another cdinn simulate"):
            write_dataset(directory, CONFIG, 16, shard_size=16, workers=0, progress=False)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
    assert partial.read_bytes() == b"not yet a complete HDF5 file"
