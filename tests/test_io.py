import os

import h5py
import numpy as np
import pytest
import tifffile

from cdinn.errors import InputError
from cdinn.io import Result, StackWriter, atomic_path, read_pattern, read_result, write_result


@pytest.fixture
def pattern():
    return np.random.default_rng(0).poisson(50.0, (8, 12, 16)).astype(np.float32)


def write_formats(tmp_path, data):
    np.save(tmp_path / "a.npy", data)
    np.savez(tmp_path / "b.npz", data=data)
    np.savez(tmp_path / "c.npz", whatever=data)
    with h5py.File(tmp_path / "d.cxi", "w") as f:
        f["entry_1/data_1/data"] = data
    with h5py.File(tmp_path / "e.h5", "w") as f:
        f["some/deep/frames"] = data
    tifffile.imwrite(tmp_path / "f.tif", data)
    frames = tmp_path / "frames"
    frames.mkdir()
    for k, frame in enumerate(data):
        tifffile.imwrite(frames / f"scan_{k:05d}.tif", frame)
    return ["a.npy", "b.npz", "c.npz", "d.cxi", "e.h5", "f.tif", "frames"]


def test_every_format_reads_the_same_array(tmp_path, pattern):
    for name in write_formats(tmp_path, pattern):
        data, mask = read_pattern(tmp_path / name)
        assert data.dtype == np.float32
        assert np.array_equal(data, pattern), name
        assert mask is None


def test_hdf5_key_and_cxi_mask(tmp_path, pattern):
    mask = np.zeros(pattern.shape, np.int8)
    mask[0, 0, :3] = 1
    with h5py.File(tmp_path / "m.cxi", "w") as f:
        f["entry_1/data_1/data"] = pattern
        f["entry_1/instrument_1/detector_1/mask"] = mask
        f["other"] = pattern * 2
    data, m = read_pattern(tmp_path / "m.cxi")
    assert m.sum() == 3 and m.dtype == bool
    data, _ = read_pattern(f"{tmp_path / 'm.cxi'}::other")
    assert np.array_equal(data, pattern * 2)


def test_mask_file_and_shape_mismatch(tmp_path, pattern):
    np.save(tmp_path / "p.npy", pattern)
    np.save(tmp_path / "mask.npy", np.ones(pattern.shape[1:], np.uint8))
    with pytest.raises(InputError, match="does not match"):
        read_pattern(tmp_path / "p.npy", tmp_path / "mask.npy")
    good = np.zeros(pattern.shape, np.uint8)
    good[1, 2, 3] = 1
    np.save(tmp_path / "mask_ok.npy", good)
    assert read_pattern(tmp_path / "p.npy", tmp_path / "mask_ok.npy")[1].sum() == 1


def test_edf_reads(shared_data):
    data, _ = read_pattern(shared_data / "esrf-id10-logo-2d" / "logo5mu_20sec.edf")
    assert data.shape == (512, 512) and data.max() > 1000


@pytest.mark.parametrize(
    "array, fragment",
    [
        (np.full((8, 8), np.nan, np.float32), "non-finite"),
        (-np.ones((8, 8), np.float32), "negative"),
        (np.zeros((8, 8), np.float32), "all zero"),
        (np.ones(64, np.float32), "2D or 3D"),
        (np.ones((2, 2, 2, 2), np.float32), "2D or 3D"),
        (np.ones((0, 8), np.float32), "empty"),
        (np.ones((8, 8), np.complex64), "real numeric"),
    ],
)
def test_invalid_arrays_are_clear_errors(tmp_path, array, fragment):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(InputError, match=fragment):
        read_pattern(tmp_path / "bad.npy")


def test_bad_files_are_clear_errors(tmp_path):
    (tmp_path / "empty.h5").write_bytes(b"")
    (tmp_path / "junk.h5").write_bytes(b"not an hdf5 file at all" * 10)
    np.save(tmp_path / "ok.npy", np.ones((16, 16), np.float32))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "ok.npy").read_bytes()[:100])
    (tmp_path / "x.jpg").write_bytes(b"123")
    (tmp_path / "noframes").mkdir()
    for name, fragment in [
        ("empty.h5", "empty"),
        ("junk.h5", "cannot read"),
        ("cut.npy", "cannot read"),
        ("x.jpg", "unknown format"),
        ("missing.npy", "no such file"),
        ("noframes", "no .tif"),
    ]:
        with pytest.raises(InputError, match=fragment):
            read_pattern(tmp_path / name)


def test_frames_of_different_shapes(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    tifffile.imwrite(d / "a_0.tif", np.ones((8, 8), np.uint16))
    tifffile.imwrite(d / "a_1.tif", np.ones((8, 9), np.uint16))
    with pytest.raises(InputError, match="differs"):
        read_pattern(d)


def test_reading_never_modifies_the_input(tmp_path, pattern):
    path = tmp_path / "a.npy"
    np.save(path, pattern)
    before = path.read_bytes()
    data, _ = read_pattern(path)
    data[...] = -1
    assert path.read_bytes() == before


@pytest.mark.parametrize("suffix", [".npz", ".h5", ".cxi"])
def test_result_roundtrip(tmp_path, suffix):
    obj = (np.random.default_rng(1).normal(size=(6, 6)) + 1j).astype(np.complex64)
    result = Result(obj, np.abs(obj) > 1, 0.0123, {"chi2": np.linspace(1, 0, 5)}, {"method": "x", "timings": {"total_s": 1.5}}, {"chi2_starts": np.array([0.1, 0.2])})
    path = write_result(tmp_path / f"r{suffix}", result)
    back = read_result(path)
    assert np.array_equal(back.object, obj) and back.object.dtype == np.complex64
    assert np.array_equal(back.support, result.support)
    assert back.chi2 == pytest.approx(0.0123)
    assert np.allclose(back.history["chi2"], result.history["chi2"])
    assert back.provenance == result.provenance
    assert np.allclose(back.extras["chi2_starts"], [0.1, 0.2])
    if suffix == ".cxi":
        with h5py.File(path) as f:
            assert np.array_equal(f["entry_1/image_1/data"][()], obj)


def _stack_frames(n: int, shape=(8, 6)) -> list[Result]:
    rng = np.random.default_rng(5)
    frames = []
    for i in range(n):
        obj = np.zeros(shape, np.complex64)
        obj[2:5, 1:4] = rng.normal(size=(3, 3)) + 1j * rng.normal(size=(3, 3))
        counted = i % 3 != 2  # every third pattern is not photon counts: no floor
        frames.append(Result(obj, obj != 0, 0.01 * (i + 1), {}, {"method": "x", "seed": i, "stages": [i],
                             "chi2_noise_floor": 0.02 if counted else None, "timings": {"total_s": 1.0}}))
    return frames


@pytest.mark.parametrize("suffix", [".h5", ".npz", ".cxi"])
def test_stack_writer_streams_every_frame(tmp_path, suffix):
    frames = _stack_frames(7)
    with StackWriter(tmp_path / f"s{suffix}", 7) as writer:
        for r in frames:
            writer.add(r)
        assert not (tmp_path / f"s{suffix}").exists()  # nothing visible before close
        provenance = writer.close(2.0, {"input": "x.npy"})
    back = read_result(tmp_path / f"s{suffix}")
    assert np.array_equal(back.object, np.stack([r.object for r in frames])) and back.object.dtype == np.complex64
    assert np.array_equal(back.support, np.stack([r.support for r in frames]))
    assert np.allclose(back.chi2, [r.chi2 for r in frames])
    floors = back.extras["chi2_noise_floor"]
    assert np.allclose(floors[[0, 1, 3, 4, 6]], 0.02) and np.isnan(floors[[2, 5]]).all()
    # chi2 0.03 and 0.06 have no floor; of the others 0.04, 0.05 and 0.07 are above 0.02
    assert back.provenance == provenance and provenance["above_noise_floor"] == 3 and provenance["stack"] == 7
    assert provenance["seeds"] == list(range(7)) and provenance["input"] == "x.npy" and "stages" not in provenance
    assert provenance["timings"] == {"total_s": 2.0, "per_pattern_s": 2.0 / 7}
    if suffix == ".h5":
        with h5py.File(tmp_path / "s.h5") as f:  # as write_result stores a stack: gzip, one chunk per frame
            assert f["object"].chunks == (1, 8, 6) and f["object"].compression == "gzip"
            assert f["support"].chunks == (1, 8, 6) and f["support"].compression == "gzip"
    assert sorted(os.listdir(tmp_path)) == [f"s{suffix}"]


def test_stack_writer_leaves_nothing_when_the_stack_fails(tmp_path):
    frames = _stack_frames(600)  # more than one background batch
    with pytest.raises(RuntimeError):
        with StackWriter(tmp_path / "s.h5", 600) as writer:
            for r in frames[:550]:
                writer.add(r)
            raise RuntimeError("pattern 550 failed")
    assert os.listdir(tmp_path) == []
    writer = StackWriter(tmp_path / "s.h5", 600)
    with pytest.raises(ValueError, match="got 599 of its 600"):
        with writer:
            for r in frames[:599]:
                writer.add(r)
            writer.close(1.0)
    assert os.listdir(tmp_path) == []
    odd = Result(np.zeros((8, 7), np.complex64), np.zeros((8, 7), bool), 0.1)
    with pytest.raises(ValueError, match=r"frame 1 has shape \(8, 7\)"):
        with StackWriter(tmp_path / "s.h5", 600) as writer:
            writer.add(frames[0])
            writer.add(odd)
    assert os.listdir(tmp_path) == []
    with StackWriter(tmp_path / "s.h5", 600) as writer:
        for r in frames:
            writer.add(r)
        writer.close(1.0)
    assert np.array_equal(read_result(tmp_path / "s.h5").object[-1], frames[-1].object)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out.h5"
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("crash mid-write")
    assert not dest.exists()
    assert os.listdir(tmp_path) == []


def test_a_killed_writer_leaves_no_debris_after_the_next_write(tmp_path):
    import subprocess
    import sys

    from cdinn.io.atomic import atomic_path

    dest = tmp_path / "r.h5"
    # A writer killed mid-way: its temporary stays behind, named with its (now finished) PID.
    code = (f"import os, sys\nfrom cdinn.io.atomic import atomic_path\nwith atomic_path({str(dest)!r}) as t:\n"
            "    t.write_bytes(b'half')\n    os._exit(9)\n")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert len(list(tmp_path.glob(".r.h5.*.tmp"))) == 1 and not dest.exists()
    with atomic_path(dest) as tmp:
        tmp.write_bytes(b"whole")
    assert dest.read_bytes() == b"whole" and not list(tmp_path.glob(".*.tmp"))


def test_a_stack_is_checked_chunk_by_chunk_and_stays_mapped(tmp_path, monkeypatch):
    """A float32 .npy stack is mapped from its file (copy-on-write), not copied, and checked a
    few frames at a time with the messages of a whole-array check (indices over the stack)."""
    from cdinn.io import read_stack
    from cdinn.io import validate

    monkeypatch.setattr(validate, "CHECK_BYTES", 3 * 8 * 8 * 4)  # three 8x8 frames per chunk
    rng = np.random.default_rng(2)
    stack = (rng.poisson(20, (11, 8, 8)) + 1).astype(np.float32)
    path = tmp_path / "s.npy"
    np.save(path, stack)
    before = path.read_bytes()
    data, _ = read_stack(path)
    assert np.array_equal(data, stack) and not data.flags.owndata  # a view of the mapped file
    data[0] = -1  # copy-on-write: the file does not change
    assert path.read_bytes() == before
    bad = stack.copy()
    bad[[5, 9]] = 0
    np.save(path, bad)
    with pytest.raises(InputError, match=r"pattern\(s\) 5, 9 of the stack are all zero"):
        read_stack(path)
    bad = stack.copy()
    bad[1, 0, 0], bad[7, 2, 2], bad[10, 3, 3] = np.nan, -3.0, -5.0
    np.save(path, bad)
    with pytest.raises(InputError, match=r"1 non-finite value"):
        read_stack(path)
    bad[1, 0, 0] = 1.0
    np.save(path, bad)
    with pytest.raises(InputError, match=r"2 negative intensity value\(s\) \(min -5\)"):
        read_stack(path)
    np.save(path, stack.astype(np.uint16))  # other dtypes are read and converted, as before
    data, _ = read_stack(path)
    assert data.dtype == np.float32 and data.flags.owndata and np.array_equal(data, stack)


def test_an_hdf5_stack_is_read_a_block_at_a_time_with_the_checks_of_a_whole_read(tmp_path, monkeypatch):
    """A detector's stack in HDF5 (uint16, compressed, one chunk per frame) is never read or
    converted whole: checked a few frames at a time with the messages of a whole-array check,
    then read a slice per batch as float32; a corrupt chunk is a one-line error."""
    from cdinn.io import read_stack
    from cdinn.io import validate
    from cdinn.io.readers import HDF5Stack

    monkeypatch.setattr(validate, "CHECK_BYTES", 3 * 8 * 8 * 4)  # three 8x8 frames per chunk
    rng = np.random.default_rng(3)
    stack = (rng.poisson(20, (11, 8, 8)) + 1).astype(np.uint16)
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data", data=stack, chunks=(1, 8, 8), compression="gzip")
        f.create_dataset("entry/other", data=np.zeros(3))
    reads = []
    real = HDF5Stack.__getitem__
    monkeypatch.setattr(HDF5Stack, "__getitem__", lambda self, i: reads.append(i) or real(self, i))
    data, mask = read_stack(path)
    assert isinstance(data, HDF5Stack) and mask is None and data.shape == (11, 8, 8) and len(data) == 11
    assert reads == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 12)]  # the check: block by block
    block = data[2:5]
    assert block.dtype == np.float32 and np.array_equal(block, stack[2:5]) and np.array_equal(np.stack(list(data)), stack)
    data.close()
    # the check's first block is kept (the first batches read it again, decompressed once), a copy each time
    first = data[0:2]
    assert np.array_equal(first, stack[0:2])
    first[:] = -1
    assert np.array_equal(data[1:3], stack[1:3])
    with pytest.raises(InputError, match="cannot read frames"):
        data[4:6]  # beyond it the closed file is read

    def write(array, name="bad.h5"):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("data", data=array, chunks=(1,) + array.shape[1:])
        return tmp_path / name

    bad = stack.astype(np.float32)
    bad[[5, 9]] = 0
    with pytest.raises(InputError, match=r"pattern\(s\) 5, 9 of the stack are all zero"):
        read_stack(write(bad))
    bad = stack.astype(np.float32)
    bad[1, 0, 0], bad[7, 2, 2], bad[10, 3, 3] = np.nan, -3.0, -5.0
    with pytest.raises(InputError, match=r"1 non-finite value"):
        read_stack(write(bad))
    bad[1, 0, 0] = 1.0
    with pytest.raises(InputError, match=r"2 negative intensity value\(s\) \(min -5\)"):
        read_stack(write(bad))
    with pytest.raises(InputError, match="must be a real numeric array"):
        read_stack(write(stack.astype(np.complex64)))
    # a CXI file's own mask comes with its stack
    with h5py.File(tmp_path / "m.cxi", "w") as f:
        f.create_dataset("entry_1/data_1/data", data=stack)
        f.create_dataset("entry_1/data_1/mask", data=np.eye(8, dtype=np.uint8))
    data, mask = read_stack(tmp_path / "m.cxi")
    assert isinstance(data, HDF5Stack) and np.array_equal(mask, np.eye(8, dtype=bool))
    # a chunk whose bytes are damaged: one line naming the file, at the check, before any work
    path = write(stack, "damaged.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=stack, chunks=(1, 8, 8), compression="gzip")
        offset = f["data"].id.get_chunk_info(6).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset:offset + 16] = b"\xff" * 16
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"damaged.h5: cannot read frames") as err:
        read_stack(path)
    assert "\n" not in str(err.value)


def test_a_tiff_directory_stack_is_read_frame_by_frame_and_a_damaged_frame_is_one_line(tmp_path, capsys):
    from cdinn.cli.main import main
    from cdinn.io import read_stack
    from cdinn.io.readers import TiffFrames

    rng = np.random.default_rng(4)
    frames = (rng.poisson(20, (4, 8, 8)) + 1).astype(np.uint16)
    for i, frame in enumerate(frames):
        tifffile.imwrite(tmp_path / f"f_{i}.tif", frame)
    data, mask = read_stack(tmp_path)
    assert isinstance(data, TiffFrames) and mask is None and data.shape == (4, 8, 8) and data.dtype == np.uint16
    assert data[1:3].dtype == np.float32 and np.array_equal(data[1:3], frames[1:3]) and np.array_equal(np.stack(list(data)), frames)
    (tmp_path / "f_2.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(InputError, match=r"f_2.tif: cannot read"):
        read_stack(tmp_path)
    # tifffile's own log line does not join the error: one line, exit 2
    assert main(["phase", str(tmp_path), "-o", str(tmp_path / "r.h5"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "f_2.tif: cannot read" in err and not (tmp_path / "r.h5").exists()
