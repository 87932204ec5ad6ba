"""Sharded HDF5 datasets of simulated patterns: a resumable parallel writer and a reader.

Layout of a dataset directory::

    manifest.json          configuration, sample count, shard size, package version
    shard-00000.h5         samples [0, shard_size), complete
    shard-00001.h5.partial samples being written (renamed to .h5 once complete)

Each shard holds ``intensity`` (the input pattern, float32), ``amplitude`` and ``phase``
(float32 targets), ``support`` (bool), ``index`` (the sample index of each row) and one
column per parameter under ``params/``; chunked and gzip-compressed. The shard layout depends
only on the sample count and the shard size, so the same dataset comes out whether one
process writes every shard or a job array writes one shard each (``shard=(I, N)`` takes the
shards ``j`` with ``j % N == I``). A partial shard records how many samples it holds after
each flush; rerunning the same command continues from there, and since sample ``i`` depends
only on the seed and ``i`` the result is identical to an uninterrupted run.

Arrays are stored one row per chunk (random access reads one chunk) and compressed by the
worker processes, which hand finished chunks to the single writer: compression would
otherwise serialise on the writer and cap the throughput.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import multiprocessing as mp
import os
import signal
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from cdinn import __version__
from cdinn.errors import InputError
from cdinn.io.atomic import atomic_path
from cdinn.simulate.generators import SimulationConfig, simulate_rows

MANIFEST = "manifest.json"
ARRAYS = ("intensity", "amplitude", "phase", "support")
FLUSH_SECONDS = 2.0
GZIP_LEVEL = 1  # Poisson counts and smooth targets compress 3-10x already at level 1


def shard_path(directory: Path, shard: int) -> Path:
    """Final path of shard number ``shard``."""
    return directory / f"shard-{shard:05d}.h5"


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _check_manifest(directory: Path, manifest: dict) -> None:
    """Write the manifest, or check that an existing one describes the same dataset."""
    path = directory / MANIFEST
    if path.exists():
        old = json.loads(path.read_text())
        keys = ("config", "n_samples", "shard_size")
        if any(old.get(k) != manifest[k] for k in keys):
            diff = [k for k in keys if old.get(k) != manifest[k]]
            raise InputError(f"{directory} holds a dataset made with other settings ({', '.join(diff)}); use a new directory")
        return
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))


def file_checksum(path: Path) -> str:
    """SHA-256 of a file's bytes (computed once per version of the file in a process)."""
    st = path.stat()
    return _checksum(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _checksum(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime key the cache: a training run opens the same shards several times
    # (the whole set, then its train and validation splits) and hashes each once.
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _lock_path(shard: Path) -> Path:
    return shard.with_name(f".{shard.name}.lock")


@contextlib.contextmanager
def _locked(lock: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock`` (created, removed after), or fail at once naming ``what``."""
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{what} is being written by another cdinn simulate; wait for it, or use another folder") from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _record_checksum(directory: Path, name: str, digest: str) -> None:
    """Add a complete shard's checksum to the manifest (job-array processes take turns)."""
    lock = os.open(directory, os.O_RDONLY)  # the folder itself: a lock that leaves no file behind
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # short: wait for the other writer
        path = directory / MANIFEST
        manifest = json.loads(path.read_text())
        manifest.setdefault("checksums", {})[name] = digest
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2))
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)


def verify_shards(directory: Path, require_all: bool = False) -> list[Path]:
    """The complete shards of a dataset, each checked against the manifest's checksum.

    Parameters
    ----------
    directory : dataset folder
    require_all : every shard the manifest implies must be there (training); else the complete
        shards present are returned (reading a dataset that is still being written)

    Raises
    ------
    InputError
        A shard missing (with ``require_all``), truncated or corrupt, named, with what to do.
    """
    path = directory / MANIFEST
    if not path.exists():
        raise InputError(f"{directory}: no {MANIFEST}; not a cdinn simulate dataset")
    try:
        manifest = json.loads(path.read_text())
        expected = -(-int(manifest["n_samples"]) // int(manifest["shard_size"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise InputError(f"{path}: not a valid manifest") from None
    sums = manifest.get("checksums", {})
    shards = []
    for j in range(expected):
        shard = shard_path(directory, j)
        if not shard.exists():
            if require_all:
                raise InputError(f"{directory}: {shard.name} is missing; rerun the same cdinn simulate command to make it")
            continue
        if shard.name in sums and file_checksum(shard) != sums[shard.name]:
            raise InputError(f"{shard}: truncated or corrupt (its checksum differs from the manifest's); "
                             "rerun the same cdinn simulate command to regenerate it")
        shards.append(shard)
    return shards


def _resume_point(path: Path) -> int:
    """Samples already stored in a partial shard; a file that cannot be read starts over."""
    if not path.exists():
        return 0
    try:
        with h5py.File(path, "r") as f:
            done = int(f.attrs.get("samples_done", 0))
    except (OSError, KeyError):  # killed mid-flush: the file is unusable, its samples are remade
        done = 0
    if done == 0:  # nothing usable, maybe half-created datasets: start the shard afresh
        path.unlink()
    return done


class _ShardWriter:
    """Appends rows to one partial shard in blocks, recording progress after each block.

    The HDF5 file is open only while a block is written: a process killed between blocks
    leaves a consistent file, and one killed during a write (rare) leaves a file that
    :func:`_resume_point` cannot open and that is then remade from its first sample.
    """

    def __init__(self, path: Path, config: SimulationConfig, shard: int, first: int, count: int, done: int):
        self.path, self.shard, self.count, self.done = path, shard, count, done
        self.rpu = config.rows_per_sample
        self.attrs = {
            "generator": config.kind,
            "config": json.dumps(config.to_dict()),
            "seed": config.seed,
            "version": __version__,
            "shard": shard,
            "first_sample": first,
            "n_samples": count,
            "rows_per_sample": self.rpu,
        }
        self.buffer: list[tuple[int, dict]] = []
        self.last_flush = time.monotonic()

    def _create(self, f: h5py.File, row: dict) -> None:
        f.attrs.update(self.attrs)
        rows = self.count * self.rpu
        for key in ARRAYS:
            shape, dtype = row["layout"][key]
            f.create_dataset(
                key, shape=(rows,) + shape, dtype=np.dtype(dtype), chunks=(1,) + shape,
                compression="gzip", compression_opts=GZIP_LEVEL, shuffle=True,
            )  # fmt: skip
        f.create_dataset("index", shape=(rows,), dtype=np.int64)
        for name in row["params"]:
            f.create_dataset(f"params/{name}", shape=(rows,), dtype=np.float64)

    def add(self, index: int, rows: list[dict]) -> None:
        for row in rows:
            self.buffer.append((index, row))
        if len(self.buffer) >= 256 or time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        start = self.done * self.rpu
        stop = start + len(self.buffer)
        with h5py.File(_partial(self.path), "a") as f:
            if "index" not in f:
                self._create(f, self.buffer[0][1])
            for key in ARRAYS:
                dset = f[key]
                zeros = (0,) * (dset.ndim - 1)
                for k, (_, row) in enumerate(self.buffer):
                    dset.id.write_direct_chunk((start + k,) + zeros, row[key])
            f["index"][start:stop] = [i for i, _ in self.buffer]
            for name, dset in f["params"].items():
                dset[start:stop] = [row["params"][name] for _, row in self.buffer]
            # The count is updated only after the rows it covers are on disk.
            f.flush()
            f.attrs["samples_done"] = self.done + len(self.buffer) // self.rpu
        self.done += len(self.buffer) // self.rpu
        self.buffer.clear()
        self.last_flush = time.monotonic()

    def close(self) -> bool:
        """Write what is buffered; a complete shard gets its final name. True if complete."""
        self.flush()
        if self.done == self.count:
            os.replace(_partial(self.path), self.path)
            _record_checksum(self.path.parent, self.path.name, file_checksum(self.path))
            return True
        return False


def _init_worker() -> None:
    # One thread per worker process: the workers already fill the cores.
    torch.set_num_threads(1)
    # The parent decides when to stop: a worker ends quietly when the pool terminates it
    # (the CLI's SIGTERM -> KeyboardInterrupt handler is for the parent only).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _deflate(arr: np.ndarray) -> bytes:
    """One HDF5 chunk through the shuffle + gzip filters, as h5py would write it."""
    raw = np.ascontiguousarray(arr)
    if raw.dtype.itemsize > 1:  # the shuffle filter groups the k-th bytes of all elements
        raw = raw.view(np.uint8).reshape(-1, raw.dtype.itemsize).T
    return zlib.compress(raw.tobytes(), GZIP_LEVEL)


def _simulate(task: tuple[SimulationConfig, int]) -> tuple[int, list[dict]]:
    config, index = task
    rows = simulate_rows(config, index)
    for row in rows:
        row["layout"] = {key: (row[key].shape, row[key].dtype.str) for key in ARRAYS}
        row.update({key: _deflate(row[key]) for key in ARRAYS})
    return index, rows


def _pool(workers: int):
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(method).Pool(workers, initializer=_init_worker)


def write_dataset(
    directory: str | os.PathLike,
    config: SimulationConfig,
    n_samples: int,
    shard_size: int = 1000,
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    progress: bool = True,
    max_samples: int | None = None,
) -> int:
    """Write (or resume) the shards of a simulated dataset.

    Parameters
    ----------
    directory : path
        Dataset directory (created if needed).
    config : SimulationConfig
        What to simulate.
    n_samples : int
        Sample indices ``0 .. n_samples - 1`` (an atomistic sample is a crystal: two rows
        with its control).
    shard_size : int
        Samples per shard file.
    shard : (int, int)
        ``(I, N)``: write only the shards ``j`` with ``j % N == I`` (one job of an array of N).
    workers : int
        Worker processes simulating while this process writes; 0 simulates in this process.
    progress : bool
        Show a progress bar.
    max_samples : int, optional
        Stop after this many new samples (leaves partial shards to resume).

    Returns
    -------
    int
        Samples simulated by this call.
    """
    if n_samples < 1 or shard_size < 1 or workers < 0:
        raise InputError("the sample count and shard size must be positive, the worker count not negative")
    part, parts = shard
    if not 0 <= part < parts:
        raise InputError(f"shard {part}/{parts}: need 0 <= I < N")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {"config": config.to_dict(), "n_samples": n_samples, "shard_size": shard_size, "version": __version__}
    _check_manifest(directory, manifest)

    plan = []  # (shard, first sample, count, samples already done)
    for j in range(part, -(-n_samples // shard_size), parts):
        first = j * shard_size
        count = min(shard_size, n_samples - first)
        path = shard_path(directory, j)
        if path.exists() and not _intact(directory, path):
            print(f"{path}: truncated or corrupt (checksum); regenerating it", file=sys.stderr)
            path.unlink()
        if not path.exists():
            # Under the shard's lock: the partial shard of another running `cdinn simulate` is
            # neither read mid-write nor, when unreadable then, deleted; this run fails instead.
            with _locked(_lock_path(path), path):
                plan.append((j, first, count, _resume_point(_partial(path))))
    todo = [(j, first + k) for j, first, count, done in plan for k in range(done, count)]
    if max_samples is not None:
        todo = todo[:max_samples]
    if not todo:
        return 0
    return _write(directory, config, todo, plan, workers, progress)


def _intact(directory: Path, shard: Path) -> bool:
    """Whether a complete shard matches its recorded checksum (one without a record is recorded)."""
    sums = json.loads((directory / MANIFEST).read_text()).get("checksums", {})
    if shard.name not in sums:  # killed between the rename and the record: readable means complete
        try:
            with h5py.File(shard, "r") as f:
                len(f["index"])
        except (OSError, KeyError):
            return False
        _record_checksum(directory, shard.name, file_checksum(shard))
        return True
    return file_checksum(shard) == sums[shard.name]


def _write(directory: Path, config: SimulationConfig, todo: list, plan: list, workers: int, progress: bool) -> int:
    """Simulate the ``todo`` samples and write them shard by shard, each shard under its lock."""
    pool = _pool(workers) if workers > 0 else None
    threads = torch.get_num_threads()
    if pool is None:  # as in a worker: these small FFTs lose more to thread overhead than they gain
        torch.set_num_threads(1)
    tasks = ((config, i) for _, i in todo)
    results: Iterator = pool.imap(_simulate, tasks) if pool else map(_simulate, tasks)
    shards = {j: (first, count, done) for j, first, count, done in plan}
    current: _ShardWriter | None = None
    lock = contextlib.ExitStack()
    made = 0
    try:
        with tqdm(total=len(todo), disable=not progress, unit="sample", desc=config.kind) as bar:
            for (j, _), (index, rows) in zip(todo, results):
                if current is None or current.shard != j:
                    if current is not None:
                        current.close()
                        current = None
                    lock.close()
                    # One writer per shard: a second run into the same folder fails here, before it writes.
                    path = shard_path(directory, j)
                    lock.enter_context(_locked(_lock_path(path), path))
                    if path.exists() or _resume_point(_partial(path)) != shards[j][2]:
                        raise InputError(f"{path} was written by another process meanwhile; rerun to continue")
                    current = _ShardWriter(path, config, j, *shards[j])
                current.add(index, rows)
                made += 1
                bar.update()
    finally:
        if current is not None:
            current.close()
        lock.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        torch.set_num_threads(threads)
    return made


class SimulatedDataset(torch.utils.data.Dataset):
    """A ``torch.utils.data.Dataset`` over the complete shards of a simulated dataset.

    Rows are read on demand (files open lazily in each DataLoader worker), never all at once.

    Parameters
    ----------
    directory : path
        Dataset directory written by :func:`write_dataset`.
    keys : sequence of str
        Arrays to return among ``intensity``, ``amplitude``, ``phase``, ``support``.
    require_all : every shard of the manifest must be present (else the complete ones are
        used); each is checked against its checksum either way (:func:`verify_shards`).

    Items are dicts of tensors: the requested arrays, ``index`` (sample index) and ``params``
    (float32 vector in the order of :attr:`param_names`); the default collate turns them
    into batches.
    """

    def __init__(self, directory: str | os.PathLike, keys: Sequence[str] = ARRAYS, require_all: bool = False):
        self.directory = Path(directory)
        unknown = set(keys) - set(ARRAYS)
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}; choose from {ARRAYS}")
        self.keys = tuple(keys)
        self.paths = verify_shards(self.directory, require_all)
        if not self.paths:
            raise InputError(f"{self.directory}: no complete shard (shard-*.h5)")
        lengths = []
        for p in self.paths:
            with h5py.File(p, "r") as f:
                lengths.append(len(f["index"]))
                if p == self.paths[0]:
                    self.config = SimulationConfig.from_dict(json.loads(f.attrs["config"]))
                    self.param_names = tuple(sorted(f["params"]))
        self.offsets = np.cumsum([0] + lengths)
        self._files: dict[Path, h5py.File] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _file(self, path: Path) -> h5py.File:
        if os.getpid() != self._pid:  # a forked DataLoader worker must not share HDF5 handles
            self._files, self._pid = {}, os.getpid()
        if path not in self._files:
            self._files[path] = h5py.File(path, "r")
        return self._files[path]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        f = self._file(self.paths[k])
        row = i - int(self.offsets[k])
        item = {key: torch.from_numpy(np.asarray(f[key][row])) for key in self.keys}
        item["index"] = torch.tensor(int(f["index"][row]))
        item["params"] = torch.tensor([f["params"][n][row] for n in self.param_names], dtype=torch.float32)
        return item

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _files={})
