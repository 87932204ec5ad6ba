"""A corpus of bad inputs for every command (issue 16), built in a fresh folder by :func:`workspace`.

Each case is ``(command, what, argv)``; ``argv`` may name files of the workspace. A case is
clean when the command exits 2 with one line on stderr and no traceback, writes nothing, and
leaves every input byte-identical. ``tests/test_bad_inputs.py`` asserts it for every case;
``benchmarks/bench_reliability.py`` counts them for ``docs/reliability.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import tifffile

from cdinn.io import Result, StackWriter, write_result


def workspace(root: Path) -> dict[str, str]:
    """Good and bad files the cases refer to, by short name."""
    rng = np.random.default_rng(0)
    good = (rng.poisson(50, (32, 32)) + 1).astype(np.float32)
    files: dict[str, str] = {}

    def save(name: str, array) -> None:
        np.save(root / name, array)
        files[name.split(".")[0]] = str(root / name)

    save("p.npy", good)
    save("p3.npy", (rng.poisson(50, (16, 16, 16)) + 1).astype(np.float32))
    save("nan.npy", np.where(rng.random((32, 32)) < 0.01, np.nan, good))
    save("neg.npy", good - 100)
    save("zero.npy", np.zeros((32, 32), np.float32))
    save("line.npy", good[0])
    save("tiny.npy", good[:2, :2])
    save("cplx.npy", good.astype(np.complex64))
    save("four.npy", good.reshape(2, 2, 16, 16))
    save("mask_shape.npy", np.zeros((16, 16), bool))
    save("support0.npy", np.zeros((32, 32), bool))
    save("mask.npy", np.zeros((32, 32), bool))
    np.savez(root / "maskz.npz", data=np.zeros((32, 32), bool))
    files["maskz"] = str(root / "maskz.npz")
    np.savez(root / "pz.npz", data=good)
    files["pz"] = str(root / "pz.npz")
    (root / "empty.npy").write_bytes(b"")
    files["empty"] = str(root / "empty.npy")
    (root / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    files["garbage"] = str(root / "garbage.npy")
    (root / "garbage.h5").write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    files["garbage_h5"] = str(root / "garbage.h5")
    with h5py.File(root / "group.h5", "w") as f:  # a group where a dataset is expected
        f.create_group("entry_1/data_1/data")
    files["group_h5"] = str(root / "group.h5")
    with h5py.File(root / "huge.h5", "w") as f:  # declares 4096³ float32 (256 GiB), stores nothing
        f.create_dataset("data", shape=(4096, 4096, 4096), dtype=np.float32, chunks=(64, 64, 64))
    files["huge_h5"] = str(root / "huge.h5")
    secret = root / "secret.raw"
    secret.write_bytes(np.arange(32 * 32, dtype=np.float32).tobytes())
    with h5py.File(root / "external.cxi", "w") as f:  # data stored in another (any) file on disk
        f.create_dataset("entry_1/data_1/data", shape=(32, 32), dtype=np.float32, external=[(str(secret), 0, 32 * 32 * 4)])
    files["external"] = str(root / "external.cxi")
    obj = np.zeros((32, 32), np.complex64)
    obj[12:20, 12:20] = 1
    write_result(root / "r.h5", Result(obj, np.abs(obj) > 0, 0.01, provenance={"method": "phase_retrieval"}))
    files["r"] = str(root / "r.h5")
    with StackWriter(root / "stack.h5", 2) as writer:
        for _ in range(2):
            writer.add(Result(obj, np.abs(obj) > 0, 0.01, provenance={"method": "phase_retrieval"}))
        writer.close(1.0)
    files["stack"] = str(root / "stack.h5")
    obj4 = np.ones((4, 4, 4, 4), np.complex64)
    write_result(root / "r4.h5", Result(obj4, np.abs(obj4) > 0, 0.01, provenance={}))
    files["r4"] = str(root / "r4.h5")
    (root / "badcard.pt").write_bytes(b"not weights")
    (root / "badcard.json").write_text("{ not json")
    files["badcard"] = str(root / "badcard.pt")
    (root / "nofamily.pt").write_bytes(b"not weights")
    (root / "nofamily.json").write_text(json.dumps({"arguments": {}}))
    files["nofamily"] = str(root / "nofamily.pt")
    (root / "cfg_bad.toml").write_text("model = 'cdinn2d'\nepochs = 'ten'\n")
    files["cfg_bad"] = str(root / "cfg_bad.toml")
    (root / "cfg_toml.toml").write_text("model = [")
    files["cfg_toml"] = str(root / "cfg_toml.toml")
    (root / "cfg_val.toml").write_text("model = 'cdinn2d'\nbatch_size = 8\ndata = { n_train = 32, n_val = 0 }\n")
    files["cfg_val"] = str(root / "cfg_val.toml")
    (root / "afile").write_text("a file, not a folder")
    files["afile"] = str(root / "afile")
    (root / "adir.h5").mkdir()
    files["adir"] = str(root / "adir.h5")
    tiffs = root / "tiffs"  # a detector's directory of frames, one of them damaged
    tiffs.mkdir()
    for i in range(3):
        tifffile.imwrite(tiffs / f"f_{i}.tif", (rng.poisson(50, (32, 32)) + 1).astype(np.uint16))
    (tiffs / "f_3.tif").write_bytes(b"II*\x00garbage")
    files["tiffs"] = str(tiffs)
    frames = (rng.poisson(50, (4, 32, 32)) + 1).astype(np.uint32)
    with h5py.File(root / "zero_frame.h5", "w") as f:  # a stack whose third frame is empty
        f.create_dataset("data", data=np.where(np.arange(4)[:, None, None] == 2, 0, frames), chunks=(1, 32, 32))
    files["zero_frame_h5"] = str(root / "zero_frame.h5")
    with h5py.File(root / "damaged.h5", "w") as f:  # a compressed stack with one chunk's bytes overwritten
        f.create_dataset("data", data=frames, chunks=(1, 32, 32), compression="gzip")
        offset = f["data"].id.get_chunk_info(2).byte_offset
    raw = bytearray((root / "damaged.h5").read_bytes())
    raw[offset:offset + 16] = b"\xff" * 16
    (root / "damaged.h5").write_bytes(bytes(raw))
    files["damaged_h5"] = str(root / "damaged.h5")
    ro = root / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    files["readonly"] = str(ro)
    files["out"] = str(root / "out.h5")
    files["outdir"] = str(root / "outdir")
    files["root"] = str(root)
    return files


CASES: list[tuple[str, str, list[str]]] = [
    # phase
    ("phase", "missing input", ["phase", "{root}/nope.npy", "-o", "{out}"]),
    ("phase", "empty file", ["phase", "{empty}", "-o", "{out}"]),
    ("phase", "corrupt .npy", ["phase", "{garbage}", "-o", "{out}"]),
    ("phase", "corrupt HDF5", ["phase", "{garbage_h5}", "-o", "{out}"]),
    ("phase", "HDF5 group, not a dataset", ["phase", "{group_h5}", "-o", "{out}"]),
    ("phase", "HDF5 declaring 4096³ (256 GiB)", ["phase", "{huge_h5}::data", "-o", "{out}"]),
    ("phase", "HDF5 with external storage", ["phase", "{external}", "-o", "{out}"]),
    ("phase", "NaN values", ["phase", "{nan}", "-o", "{out}"]),
    ("phase", "negative counts", ["phase", "{neg}", "-o", "{out}"]),
    ("phase", "all zero", ["phase", "{zero}", "-o", "{out}"]),
    ("phase", "1D array", ["phase", "{line}", "-o", "{out}"]),
    ("phase", "4D array", ["phase", "{four}", "-o", "{out}"]),
    ("phase", "2x2 pattern", ["phase", "{tiny}", "-o", "{out}"]),
    ("phase", "complex pattern", ["phase", "{cplx}", "-o", "{out}"]),
    ("phase", "mask of another shape", ["phase", "{p}", "--mask", "{mask_shape}", "-o", "{out}"]),
    ("phase", "output over the mask", ["phase", "{p}", "--mask", "{maskz}", "-o", "{maskz}"]),
    ("phase", "output over the input", ["phase", "{pz}", "-o", "{pz}"]),
    ("phase", "output over the support (.h5)", ["phase", "{p}", "--support", "{r}", "-o", "{r}"]),
    ("phase", "all-zero support", ["phase", "{p}", "--support", "{support0}", "-o", "{out}"]),
    ("phase", "support of another shape", ["phase", "{p}", "--support", "{mask_shape}", "-o", "{out}"]),
    ("phase", "unknown operator", ["phase", "{p}", "--recipe", "FOO**3", "-o", "{out}"]),
    ("phase", "SUP threshold 5", ["phase", "{p}", "--recipe", "SUP(threshold=5) * ER**5", "-o", "{out}"]),
    ("phase", "HIO beta 1e30", ["phase", "{p}", "--recipe", "HIO(beta=1e30)**5", "-o", "{out}"]),
    ("phase", "zero iterations", ["phase", "{p}", "--recipe", "ER**0", "-o", "{out}"]),
    ("phase", "starts 0", ["phase", "{p}", "--starts", "0", "-o", "{out}"]),
    ("phase", "average > starts", ["phase", "{p}", "--average", "3", "-o", "{out}"]),
    ("phase", "seed 1e23", ["phase", "{p}", "--seed", "1e23", "-o", "{out}"]),
    ("phase", "unknown device", ["phase", "{p}", "--device", "tpu", "-o", "{out}"]),
    ("phase", "unknown result suffix", ["phase", "{p}", "-o", "{root}/r.txt"]),
    ("phase", "output in a read-only folder", ["phase", "{p}", "-o", "{readonly}/r.h5"]),
    ("phase", "output folder is a file", ["phase", "{p}", "-o", "{afile}/r.h5"]),
    ("phase", "output is a directory", ["phase", "{p}", "-o", "{adir}"]),
    ("phase", "one bad input among several", ["phase", "{p}", "{nan}", "-o", "{outdir}"]),
    ("phase", "threads 0", ["phase", "{p}", "--threads", "0", "-o", "{out}"]),
    ("phase", "damaged TIFF frame in a directory", ["phase", "{tiffs}", "-o", "{out}"]),
    ("phase", "stack of TIFF frames, one damaged", ["phase", "{tiffs}", "--stack", "-o", "{out}"]),
    ("phase", "HDF5 stack with a damaged chunk", ["phase", "{damaged_h5}", "--stack", "-o", "{out}"]),
    # invert
    ("invert", "unknown model", ["invert", "{p}", "--model", "nope", "-o", "{out}"]),
    ("invert", "model card not JSON", ["invert", "{p}", "--model", "{badcard}", "-o", "{out}"]),
    ("invert", "model card without family", ["invert", "{p}", "--model", "{nofamily}", "-o", "{out}"]),
    ("invert", "3D model, 2D pattern", ["invert", "{p}", "--model", "autophasenn-64", "-o", "{out}"]),
    ("invert", "2D model, 3D pattern", ["invert", "{p3}", "--model", "cdinn2d", "-o", "{out}"]),
    ("invert", "bin 0", ["invert", "{p}", "--model", "cdinn2d", "--bin", "0", "-o", "{out}"]),
    ("invert", "bin 64 on 32 pixels", ["invert", "{p}", "--model", "cdinn2d", "--bin", "64", "-o", "{out}"]),
    ("invert", "threshold 2", ["invert", "{p}", "--model", "cdinn2d", "--threshold", "2", "-o", "{out}"]),
    ("invert", "dilation -1", ["invert", "{p}", "--model", "cdinn2d", "--dilation", "-1", "-o", "{out}"]),
    ("invert", "bad refinement", ["invert", "{p}", "--model", "cdinn2d", "--refine", "er:x", "-o", "{out}"]),
    ("invert", "superscript count", ["invert", "{p}", "--model", "cdinn2d", "--refine", "er:²", "-o", "{out}"]),
    ("invert", "huge count", ["invert", "{p}", "--model", "cdinn2d", "--refine", "ad:1e23", "-o", "{out}"]),
    ("invert", "output over the mask", ["invert", "{p}", "--model", "cdinn2d", "--mask", "{maskz}", "-o", "{maskz}"]),
    ("invert", "NaN pattern", ["invert", "{nan}", "--model", "cdinn2d", "-o", "{out}"]),
    ("invert", "one bad input among several", ["invert", "{p}", "{nan}", "--model", "cdinn2d", "-o", "{outdir}"]),
    ("invert", "HDF5 stack with an all-zero frame", ["invert", "{zero_frame_h5}", "--stack", "--model", "cdinn2d", "-o", "{out}"]),
    # prepare
    ("prepare", "missing frames", ["prepare", "{root}/nope.tif", "-o", "{root}/x.cxi"]),
    ("prepare", "size 4096", ["prepare", "{p}", "--size", "4096", "-o", "{root}/x.cxi"]),
    ("prepare", "size 2", ["prepare", "{p}", "--size", "2", "-o", "{root}/x.cxi"]),
    ("prepare", "oversampling nan", ["prepare", "{p}", "--oversampling", "nan", "-o", "{root}/x.cxi"]),
    ("prepare", "oversampling 1e9", ["prepare", "{p}", "--oversampling", "1e9", "-o", "{root}/x.cxi"]),
    ("prepare", "negative energy", ["prepare", "{p}", "--energy", "-8", "-o", "{root}/x.cxi"]),
    ("prepare", "bad ROI", ["prepare", "{p}", "--roi", "a:b", "-o", "{root}/x.cxi"]),
    ("prepare", "negative counts", ["prepare", "{neg}", "-o", "{root}/x.cxi"]),
    ("prepare", "output over the input", ["prepare", "{p}", "-o", "{p}"]),
    ("prepare", "output suffix", ["prepare", "{p}", "-o", "{root}/x.png"]),
    ("prepare", "bin 0", ["prepare", "{p}", "--bin", "0", "-o", "{root}/x.cxi"]),
    # report
    ("report", "a pattern, not a result", ["report", "{p}", "-o", "{root}/f.png"]),
    ("report", "missing result", ["report", "{root}/nope.h5", "-o", "{root}/f.png"]),
    ("report", "corrupt result", ["report", "{garbage_h5}", "-o", "{root}/f.png"]),
    ("report", "4D object", ["report", "{r4}", "-o", "{root}/f.png"]),
    ("report", "threshold 0.999999", ["report", "{r}", "-o", "{root}/f.png", "--threshold", "1.5"]),
    ("report", "figure suffix .h5", ["report", "{r}", "-o", "{root}/f.h5"]),
    ("report", "figure over the result", ["report", "{r}", "-o", "{r}"]),
    ("report", "--cxi over the result", ["report", "{r}", "-o", "{root}/f.png", "--cxi", "{r}"]),
    ("report", "phase range -1", ["report", "{r}", "-o", "{root}/f.png", "--phase-range", "-1"]),
    ("report", "hkl 0 0 0", ["report", "{r}", "-o", "{root}/f.png", "--hkl", "0", "0", "0"]),
    ("report", "--frame of one reconstruction", ["report", "{r}", "-o", "{root}/f.png", "--frame", "0"]),
    ("report", "--frame past the stack", ["report", "{stack}", "-o", "{root}/f.png", "--frame", "2"]),
    ("report", "--frame not a number", ["report", "{stack}", "-o", "{root}/f.png", "--frame", "x"]),
    ("report", "--vti of a whole stack", ["report", "{stack}", "-o", "{root}/f.png", "--vti", "{root}/s.vti"]),
    # simulate
    ("simulate", "unknown kind", ["simulate", "blobs", "-n", "4", "-o", "{outdir}"]),
    ("simulate", "n 0", ["simulate", "faceted", "-n", "0", "-o", "{outdir}"]),
    ("simulate", "object size 2048", ["simulate", "faceted", "-n", "2", "--object-size", "2048", "-o", "{outdir}"]),
    ("simulate", "output is a file", ["simulate", "faceted", "-n", "2", "-o", "{afile}"]),
    # train
    ("train", "missing config", ["train", "{root}/nope.toml", "--run-dir", "{outdir}"]),
    ("train", "invalid TOML", ["train", "{cfg_toml}", "--run-dir", "{outdir}"]),
    ("train", "wrong type", ["train", "{cfg_bad}", "--run-dir", "{outdir}"]),
    ("train", "n_val 0", ["train", "{cfg_val}", "--run-dir", "{outdir}"]),
    ("train", "run dir is a file", ["train", "{cfg_val}", "--run-dir", "{afile}"]),
    ("train", "cuda without a GPU", ["train", "{cfg_val}", "--run-dir", "{outdir}", "--device", "cuda"]),
    # demo, models, watch
    ("demo", "size 3", ["demo", "-o", "{outdir}", "--size", "3"]),
    ("demo", "size 100000", ["demo", "-o", "{outdir}", "--size", "100000"]),
    ("demo", "starts 0", ["demo", "-o", "{outdir}", "--starts", "0"]),
    ("models", "missing run directory", ["models", "{root}/nope"]),
    ("watch", "missing folder", ["watch", "{root}/nope", "-o", "{outdir}", "--phase", "--once"]),
    ("watch", "output is the input", ["watch", "{root}", "-o", "{root}", "--phase", "--once"]),
    ("watch", "negative settle", ["watch", "{readonly}", "-o", "{outdir}", "--phase", "--settle", "-1"]),
    ("watch", "unknown model", ["watch", "{readonly}", "-o", "{outdir}", "--model", "nope"]),
]
