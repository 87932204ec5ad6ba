"""Readers for measured patterns and masks: npy, npz, HDF5/CXI, TIFF (multi-page or a
directory of frames) and EDF."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import h5py
import numpy as np
import tifffile

from cdinn.errors import InputError
from cdinn.io.validate import CHECK_BYTES, validate_intensity, validate_mask

PATTERN_SUFFIXES = (".npy", ".npz", ".h5", ".hdf5", ".cxi", ".nxs", ".tif", ".tiff", ".edf")
CXI_DATA = "/entry_1/data_1/data"
CXI_MASKS = ("/entry_1/data_1/mask", "/entry_1/instrument_1/detector_1/mask", "/mask")


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (``MemAvailable``; 8 GiB if unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 8 << 30


def check_fits(nbytes: float, what: str, factor: float = 1.0, available: float | None = None, hint: str = "") -> None:
    """Refuse, before allocating, work whose arrays (``nbytes`` times ``factor`` copies) exceed
    the memory available now (``available`` bytes, default :func:`available_memory`)."""
    need = nbytes * factor
    have = available_memory() if available is None else available
    if need > have:
        raise InputError(f"{what} needs about {need / 2**30:.1f} GiB; {have / 2**30:.1f} GiB are available{hint}")


def _dataset(f: h5py.File, key: str, path: Path) -> np.ndarray:
    """Read one dataset, refusing what could read another file or exhaust memory."""
    obj = _checked_dataset(f, key, path)
    check_fits(obj.size * obj.dtype.itemsize, f"{path}: {key!r} of shape {obj.shape}", factor=2.0)
    return obj[()]


def _checked_dataset(f: h5py.File, key: str, path: Path) -> h5py.Dataset:
    """The dataset ``key``, refusing links, groups and data stored in other files."""
    link = f.get(key, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        raise InputError(f"{path}: {key!r} is an external link to {link.filename}; cdinn reads only data inside the file")
    obj = f[key]
    if not isinstance(obj, h5py.Dataset):
        raise InputError(f"{path}: {key!r} is a group, not a dataset; name the dataset with PATH::KEY")
    if obj.external or obj.is_virtual:
        raise InputError(f"{path}: {key!r} stores its data in other files (external or virtual dataset); "
                         "cdinn reads only data inside the file")
    return obj


def _hdf5_array(f: h5py.File, key: str | None, path: Path) -> np.ndarray:
    return _dataset(f, _hdf5_key(f, key, path), path)


def _hdf5_key(f: h5py.File, key: str | None, path: Path) -> str:
    """The dataset that holds the pattern: ``key``, CXI's data, ``data``, or the only 2D+ dataset."""
    if key is not None:
        if key not in f:
            raise InputError(f"{path}: no dataset {key!r}")
        return key
    if CXI_DATA in f:
        return CXI_DATA
    if "data" in f and isinstance(f["data"], h5py.Dataset):
        return "data"
    found: list[str] = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) and obj.ndim >= 2 else None)
    if len(found) == 1:
        return found[0]
    raise InputError(f"{path}: cannot tell which dataset holds the pattern ({len(found)} candidates); name it with PATH::KEY")


class FrameStack:
    """N patterns in a file or directory, read as float32 only where indexed: a block of
    frames costs its own memory, never the whole stack's (a detector's uint16/uint32 frames
    would otherwise be read whole and converted whole).

    Indexing as a NumPy array's first axis (an integer or a slice) gives a float32 array;
    ``shape``, ``ndim``, ``size`` and ``dtype`` (the stored type) describe the stack.
    """

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def __getitem__(self, index: int | slice) -> np.ndarray:
        raise NotImplementedError

    def __iter__(self):
        block = max(1, CHECK_BYTES // max(1, 4 * int(np.prod(self.shape[1:]))))
        for lo in range(0, len(self), block):
            yield from self[lo:lo + block]

    def mask(self) -> np.ndarray | None:
        """The stack's own bad-pixel mask, if its file has one."""
        return None


class TiffFrames(FrameStack):
    """A directory of TIFF frames (sorted by name), one frame per pattern of a stack or per
    slice of one 3D pattern; each frame is read when indexed."""

    def __init__(self, path: Path):
        self.path = path
        self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
        if not self.files:
            raise InputError(f"{path}: directory holds no .tif/.tiff frames")
        first = _read_tiff(self.files[0])
        self.shape, self.dtype = (len(self.files),) + first.shape, first.dtype

    def __getitem__(self, index: int | slice) -> np.ndarray:
        if not isinstance(index, slice):
            return self._frame(self.files[index]).astype(np.float32)
        files = self.files[index]
        out = np.empty((len(files),) + self.shape[1:], dtype=np.float32)  # each frame converted into place
        for k, path in enumerate(files):
            out[k] = self._frame(path)
        return out

    def _frame(self, path: Path) -> np.ndarray:
        image = _read_tiff(path)
        if image.shape != self.shape[1:]:
            raise InputError(f"{path}: frame shape {image.shape} differs from {self.shape[1:]} of {self.files[0].name}")
        return image


class HDF5Stack(FrameStack):
    """The patterns of a stack in an HDF5 dataset (see :class:`FrameStack`). The file stays
    open for reading until :meth:`close` (or the object is collected)."""

    def __init__(self, path: Path, key: str | None):
        self.path = path
        try:
            self._file = h5py.File(path, "r")
        except OSError as exc:
            raise _cannot_read(path, exc) from None
        try:
            self.key = _hdf5_key(self._file, key, path)
            self._data = _checked_dataset(self._file, self.key, path)
        except BaseException:
            self._file.close()
            raise
        self.shape, self.dtype = tuple(self._data.shape), self._data.dtype
        self._first: tuple[int, np.ndarray] | None = None

    def __getitem__(self, index: int | slice) -> np.ndarray:
        # The first block read (the check's, at most CHECK_BYTES) is kept: the batches that
        # start the work read it again, and a stack that fits in it is decompressed once.
        if isinstance(index, slice) and self._first is not None:
            stop, block = self._first
            lo, hi, step = index.indices(len(self))
            if step == 1 and hi <= stop:
                return block[lo:hi].copy()
        try:
            frames = np.asarray(self._data[index], dtype=np.float32)
        except (OSError, ValueError) as exc:
            raise _cannot_read(self.path, exc, f"frames {index} of {self.key!r}") from None
        if self._first is None and isinstance(index, slice) and index.indices(len(self))[::2] == (0, 1) \
                and frames.nbytes <= CHECK_BYTES:
            self._first = (len(frames), frames)
        return frames

    def mask(self) -> np.ndarray | None:
        """The file's own CXI mask, if it has one."""
        return _hdf5_mask(self._file, self.path)

    def close(self) -> None:
        self._file.close()


def _hdf5_mask(f: h5py.File, path: Path) -> np.ndarray | None:
    for name in CXI_MASKS:
        if name in f and isinstance(f[name], h5py.Dataset):
            return _dataset(f, name, path)
    return None


def _read_tiff(path: Path) -> np.ndarray:
    """One TIFF file's image. tifffile logs what it finds wrong in a damaged file and may then
    return an empty array: its log stays quiet here and the file is one clear error."""
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        image = tifffile.imread(path)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise _cannot_read(path, exc) from None
    finally:
        log.setLevel(level)
    if image.size == 0:
        raise InputError(f"{path}: cannot read (no image in the TIFF file)")
    return image


def split_key(spec: str | Path) -> tuple[Path, str | None]:
    """Split ``file.h5::/path/to/dataset`` into the file and the dataset key."""
    text = str(spec)
    if "::" in text:
        name, key = text.split("::", 1)
        return Path(name), key
    return Path(text), None


def read_array(spec: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an array and, for CXI/HDF5 files that carry one, its mask.

    Parameters
    ----------
    spec : path, optionally ``FILE::KEY`` for an HDF5 dataset or ``.npz`` key

    Returns
    -------
    (array, mask or None)

    Raises
    ------
    InputError
        Missing, empty, truncated or corrupt files, unknown formats.
    """
    path, key = split_key(spec)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_dir():
        return TiffFrames(path)[:], None
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if key is not None:
                    if key not in z.files:
                        raise InputError(f"{path}: no array {key!r} (has {', '.join(z.files)})")
                    return z[key], None
                if "data" in z.files:
                    return z["data"], (z["mask"] if "mask" in z.files else None)
                if len(z.files) == 1:
                    return z[z.files[0]], None
                raise InputError(f"{path}: several arrays ({', '.join(z.files)}) and none named 'data'; name one with PATH::KEY")
        if suffix in (".h5", ".hdf5", ".cxi", ".nxs"):
            with h5py.File(path, "r") as f:
                return _hdf5_array(f, key, path), (_hdf5_mask(f, path) if key is None else None)
        if suffix in (".tif", ".tiff"):
            return _read_tiff(path), None
        if suffix == ".edf":
            import fabio

            return np.asarray(fabio.open(str(path)).data), None
    except InputError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, tifffile.TiffFileError) as exc:
        if "pickle" in str(exc):  # numpy's word for "not a .npy header it knows"; cdinn never unpickles
            raise InputError(f"{path}: not a NumPy array file (or one holding Python objects, which cdinn never loads)") from None
        raise _cannot_read(path, exc) from None
    raise InputError(f"{path}: unknown format {suffix!r}; supported: {', '.join(PATTERN_SUFFIXES)} or a directory of TIFF frames")


def _cannot_read(path: Path, exc: Exception, what: str = "") -> InputError:
    """One line for a file (or part of one) that a reader failed on."""
    return InputError(f"{path}: cannot read{' ' + what if what else ''} "
                      f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'corrupt file'})")


def read_stack(spec: str | Path, mask: str | Path | None = None) -> tuple[np.ndarray | FrameStack, np.ndarray | None]:
    """Read a stack of N patterns ``(N, *spatial)`` (2D or 3D patterns) and its mask.

    A float32 ``.npy`` comes back mapped from its file, an HDF5 dataset as an
    :class:`HDF5Stack` and a directory of TIFF frames as :class:`TiffFrames`, all read where
    indexed; other formats are read whole.

    The mask is one pattern's shape (shared) or the stack's (one per pattern); non-zero marks
    a pixel that was not measured. Each pattern is validated like :func:`read_pattern`'s.
    """
    path, key = split_key(spec)
    suffix = path.suffix.lower()
    readable = path.is_file() and path.stat().st_size > 0  # else read_array's own, clear error
    if key is None and suffix == ".npy" and readable:
        data, own_mask = _mapped_npy(path), None
    elif suffix in (".h5", ".hdf5", ".cxi", ".nxs") and readable:
        data = HDF5Stack(path, key)
        own_mask = data.mask() if key is None else None
    elif path.is_dir():
        data, own_mask = TiffFrames(path), None
    else:
        data, own_mask = read_array(spec)
    # A float32 .npy stays mapped from its file (copy-on-write: the file never changes) and an
    # HDF5 stack in its file; either is checked chunk by chunk and read a network batch at a
    # time as the stack is inverted: no copy of the whole stack
    stack = validate_intensity(data, f"{spec} (stack)", ndims=(3, 4), per_pattern=True,
                               copy=not isinstance(data, np.memmap))
    raw_mask = read_array(mask)[0] if mask is not None else own_mask
    if raw_mask is None:
        return stack, None
    raw_mask = np.asarray(raw_mask)
    if raw_mask.shape == stack.shape:
        return stack, raw_mask != 0
    return stack, validate_mask(raw_mask, stack.shape[1:], f"{mask or spec} (mask)")


def _mapped_npy(path: Path) -> np.ndarray:
    """A ``.npy`` file mapped copy-on-write when it holds native float32, else read."""
    try:
        data = np.load(path, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return read_array(path)[0]  # the reader's own, clear error
    return data if data.dtype == np.float32 and data.dtype.isnative else np.asarray(data)


def read_pattern(spec: str | Path, mask: str | Path | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read and validate a measured intensity and its bad-pixel mask.

    The mask comes from ``mask`` when given, else from the file itself (CXI). Masks follow
    the CXI convention: non-zero marks a pixel that was not measured.

    Returns
    -------
    (intensity float32, mask bool or None)
    """
    data, own_mask = read_array(spec)
    intensity = validate_intensity(data, str(spec))
    source = mask if mask is not None else spec
    raw_mask = read_array(mask)[0] if mask is not None else own_mask
    checked = None if raw_mask is None else validate_mask(raw_mask, intensity.shape, f"{source} (mask)")
    return intensity, checked
