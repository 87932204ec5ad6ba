import subprocess
import sys

import h5py
import numpy as np
import tifffile
import pytest

from cdinn.cli.main import main
from cdinn.io import read_frame, read_result
from cdinn.simulate import faceted_crystal, simulate_pattern

FAST = "AVG**5 * ER**20 * (SUP * ER**10 * HIO**30)**2"


@pytest.fixture
def pattern_file(tmp_path):
    p = simulate_pattern(faceted_crystal((48, 48), oversampling=2.5, seed=1), photons=1e7, seed=0).numpy()
    path = tmp_path / "scan7.npy"
    np.save(path, p)
    return path


def test_phase_writes_a_result(tmp_path, pattern_file, capsys):
    out = tmp_path / "res.cxi"
    assert main(["phase", str(pattern_file), "-o", str(out), "--recipe", FAST, "--starts", "2", "--seed", "1", "-q"]) == 0
    r = read_result(out)
    assert r.object.shape == (48, 48) and r.chi2 < 0.05
    assert r.provenance["recipe"] == FAST and r.provenance["starts"] == 2
    assert r.history["chi2"].shape == (105, 2)
    assert "chi2" in capsys.readouterr().out


def test_several_inputs_go_to_a_directory(tmp_path, pattern_file):
    second = tmp_path / "scan8.h5"
    with h5py.File(second, "w") as f:
        f["data"] = np.load(pattern_file)
    bad = tmp_path / "scan9.npy"
    np.save(bad, np.full((48, 48), np.nan))
    outdir = tmp_path / "results"
    options = ["-o", str(outdir), "--recipe", FAST, "-q", "--format", ".npz"]
    assert main(["phase", str(pattern_file), str(second), str(bad), *options]) == 2  # refused before any result
    assert not outdir.exists()
    assert main(["phase", str(pattern_file), str(second), *options]) == 0
    assert sorted(p.name for p in outdir.iterdir()) == ["scan7.npz", "scan8.npz"]


def test_several_small_inputs_phase_together_as_each_would_alone(tmp_path, capsys, monkeypatch):
    """Inputs of one small shape run as one batch: each file is the one phasing it alone gives."""
    from cdinn.cli import phase
    from cdinn.simulate import faceted_crystal, simulate_pattern

    sizes = []
    original = phase.phase_batch
    monkeypatch.setattr(phase, "phase_batch", lambda ms, *a: sizes.append(len(ms)) or original(ms, *a))

    files = []
    for s, n in ((1, 40), (2, 40), (3, 40), (4, 36)):  # three of one shape, one of another
        files.append(tmp_path / f"p{s}.npy")
        np.save(files[-1], simulate_pattern(faceted_crystal((n, n), oversampling=3.0, seed=s), photons=1e8, seed=s).numpy())
    options = ["--recipe", FAST, "-q", "--seed", "6"]
    assert main(["phase", *map(str, files), "-o", str(tmp_path / "out"), *options]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4 and sizes == [3]  # the 36² input alone
    for f in files:
        assert main(["phase", str(f), "-o", str(tmp_path / f"{f.stem}_alone.h5"), *options]) == 0
        together, alone = read_result(tmp_path / "out" / f"{f.stem}.h5"), read_result(tmp_path / f"{f.stem}_alone.h5")
        assert np.array_equal(together.object, alone.object) and together.chi2 == alone.chi2
        assert together.provenance["seed"] == 6 and together.provenance["input"] == alone.provenance["input"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--recipe", "HIO**x"], "recipe"),
        (["--starts", "0"], "starts"),
        (["--mask", "nowhere.npy"], "no such file"),
        (["--device", "tpu"], "device"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path, pattern_file, capsys, args, fragment):
    out = tmp_path / "r.h5"
    assert main(["phase", str(pattern_file), "-o", str(out), "-q"] + args) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_refuses_to_overwrite_the_input(pattern_file, capsys):
    before = pattern_file.read_bytes()
    same = pattern_file.with_suffix(".npz")
    same.write_bytes(b"")
    assert main(["phase", str(same), "-o", str(same), "-q"]) == 2
    assert "refusing" in capsys.readouterr().err or same.read_bytes() == b""
    assert pattern_file.read_bytes() == before


def test_bad_output_suffix(tmp_path, pattern_file, capsys):
    assert main(["phase", str(pattern_file), "-o", str(tmp_path / "r.txt"), "-q"]) == 2
    assert "unknown result format" in capsys.readouterr().err


def test_console_script_help_documents_the_recipe_language():
    out = subprocess.run([sys.executable, "-m", "cdinn.cli.main", "phase", "--help"], capture_output=True, text=True, check=True).stdout
    assert "HIO(beta=0.9)" in out and "runs first" in out
    assert "default recipe" in out


def test_corrupt_input_via_console_script(tmp_path):
    bad = tmp_path / "bad.cxi"
    bad.write_bytes(b"\x89HDF garbage")
    proc = subprocess.run([sys.executable, "-m", "cdinn.cli.main", "phase", str(bad), "-o", str(tmp_path / "o.h5")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.h5").exists()


def test_demo_runs_small(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path), "--size", "32", "--starts", "1", "-q"]) == 0
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert "PR-600" in capsys.readouterr().out


def test_phase_with_a_given_support(tmp_path, pattern_file):
    support = np.zeros((48, 48), np.uint8)
    support[14:34, 14:34] = 1
    np.save(tmp_path / "support.npy", support)
    bad = tmp_path / "small.npy"
    np.save(bad, support[:10, :10])
    out = tmp_path / "r.h5"
    assert main(["phase", str(pattern_file), "-o", str(out), "--recipe", FAST, "--support", str(tmp_path / "support.npy"), "-q"]) == 0
    assert read_result(out).chi2 < 0.1
    assert main(["phase", str(pattern_file), "-o", str(tmp_path / "r2.h5"), "--support", str(bad), "-q"]) == 2


def test_a_bug_is_one_line_and_exit_1_unless_debug(monkeypatch, tmp_path, pattern_file, capsys):
    from cdinn.cli import phase

    def broken(*args, **kwargs):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(phase, "phase_retrieval", broken)
    assert main(["phase", str(pattern_file), "-o", str(tmp_path / "o.h5"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ZeroDivisionError" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "phase", str(pattern_file), "-o", str(tmp_path / "o.h5"), "-q"])
    assert not (tmp_path / "o.h5").exists()


def test_a_closed_pipe_is_not_a_traceback():
    import os

    # `cdinn models --json | head`: the reader is gone before cdinn writes (deterministically here).
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.run([sys.executable, "-m", "cdinn.cli.main", "models", "--json"], stdout=write_end, stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr


def test_stacks_in_one_file_out(tmp_path, capsys):
    stack = np.stack([simulate_pattern(faceted_crystal((32, 32), oversampling=2.5, phase_range=1.0, seed=i), photons=1e7, seed=i).numpy()
                      for i in range(6)])
    np.save(tmp_path / "stack.npy", stack)
    assert main(["phase", str(tmp_path / "stack.npy"), "--stack", "--recipe", FAST, "-o", str(tmp_path / "p.h5"), "-q", "--seed", "3"]) == 0
    r = read_result(tmp_path / "p.h5")
    assert r.object.shape == (6, 32, 32) and r.support.shape == (6, 32, 32) and r.chi2.shape == (6,) and r.provenance["stack"] == 6
    with h5py.File(tmp_path / "p.h5") as f:  # one chunk per reconstruction: reading one back reads one chunk
        assert f["object"].chunks == (1, 32, 32) and f["support"].chunks == (1, 32, 32)
    # each pattern reconstructed on its own: the same as phase on that pattern alone (seed + index)
    np.save(tmp_path / "four.npy", stack[4])
    assert main(["phase", str(tmp_path / "four.npy"), "--recipe", FAST, "-o", str(tmp_path / "four.h5"), "-q", "--seed", "7"]) == 0
    assert read_result(tmp_path / "four.h5").chi2 == pytest.approx(float(r.chi2[4]), rel=1e-5)
    assert main(["invert", str(tmp_path / "stack.npy"), "--stack", "--model", "cdinn2d", "--refine", "none",
                 "-o", str(tmp_path / "n.npz"), "-q"]) == 0
    n = read_result(tmp_path / "n.npz")
    assert n.object.shape == (6, 32, 32) and n.chi2.shape == (6,) and np.all(n.chi2 < 0.5)
    # each pattern's counting-noise floor, not the first pattern's for all of them
    floors = n.extras["chi2_noise_floor"]
    assert floors.shape == (6,) and np.all(floors > 0) and len(set(floors.tolist())) > 1
    assert "chi2_noise_floor" not in n.provenance and n.provenance["above_noise_floor"] == int(np.sum(n.chi2 > floors))
    # a stack's report: chi² of every frame and a few frames drawn; --frame I draws one, from its own input frame
    capsys.readouterr()
    assert main(["report", str(tmp_path / "n.npz"), "-o", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    worst = int(np.argmax(n.chi2))
    assert "6 reconstructions" in out and f"worst frame {worst}: {n.chi2[worst]:.4g}" in out
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["report", str(tmp_path / "p.h5"), "--frame", "4", "-o", str(tmp_path / "f4.png")]) == 0
    assert (tmp_path / "f4.png").is_file()
    frame = read_frame(tmp_path / "p.h5", 4)
    assert np.array_equal(frame.object, r.object[4]) and frame.chi2 == pytest.approx(float(r.chi2[4]))
    assert frame.provenance["stack_frame"] == 4 and frame.provenance["chi2_noise_floor"] is not None
    assert main(["report", str(tmp_path / "p.h5"), "--frame", "6", "-o", str(tmp_path / "f6.png")]) == 2
    assert "frame 6 is outside the stack of 6" in capsys.readouterr().err and not (tmp_path / "f6.png").exists()
    assert main(["report", str(tmp_path / "four.h5"), "--frame", "0", "-o", str(tmp_path / "f0.png")]) == 2
    assert "not a stack" in capsys.readouterr().err
    stack[2] = 0
    np.save(tmp_path / "bad.npy", stack)
    assert main(["phase", str(tmp_path / "bad.npy"), "--stack", "-o", str(tmp_path / "b.h5"), "-q"]) == 2
    assert "pattern(s) 2 of the stack are all zero" in capsys.readouterr().err and not (tmp_path / "b.h5").exists()


def test_an_hdf5_stack_gives_the_results_of_the_same_stack_as_npy(tmp_path):
    """`--stack` on a compressed uint32 HDF5 stack and on a directory of TIFF frames (each read
    a batch at a time) and on the same counts as a float32 .npy (mapped): the same
    reconstructions, bit for bit."""
    stack = np.stack([simulate_pattern(faceted_crystal((32, 32), oversampling=2.5, phase_range=1.0, seed=i), photons=1e6, seed=i).numpy()
                      for i in range(5)])
    np.save(tmp_path / "stack.npy", stack)
    with h5py.File(tmp_path / "stack.h5", "w") as f:
        f.create_dataset("entry/data/data", data=stack.astype(np.uint32), chunks=(1, 32, 32), compression="gzip")
    (tmp_path / "frames").mkdir()  # a detector's directory of TIFF frames, one per pattern
    for i, frame in enumerate(stack):
        tifffile.imwrite(tmp_path / "frames" / f"f_{i:03d}.tif", frame.astype(np.uint32))
    # invert; phase batched (one start each); phase pattern by pattern (several starts: the stack is iterated)
    for run, command in enumerate((["invert", "--model", "cdinn2d-fast", "--refine", "none"],
                                   ["phase", "--recipe", FAST, "--seed", "2"],
                                   ["phase", "--recipe", FAST, "--seed", "2", "--starts", "2"])):
        out = {}
        for name in ("stack.npy", "stack.h5", "frames"):
            dest = tmp_path / f"{run}-{name}.h5"
            assert main([command[0], str(tmp_path / name), "--stack", *command[1:], "-o", str(dest), "-q"]) == 0
            out[name] = read_result(dest)
        a, b, c = out.values()
        assert a.object.shape[0] == 5
        assert all(np.array_equal(a.object, x.object) and np.array_equal(a.chi2, x.chi2) for x in (b, c))
