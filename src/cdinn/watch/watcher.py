"""``cdinn watch``'s engine: take every complete new pattern file in a folder, invert it with a
warm network (or phase retrieval) and write its result atomically, exactly once.

Completeness: a file is taken when its size and modification time have not changed for
``settle`` seconds (a writer that renames a finished file in is seen complete at once; one that
writes in place must not pause longer than ``settle``). Dot-files and ``*.part``/``*.tmp`` are
never taken, so the safe way to deliver a file is to write it under such a name and rename it.
A file that cannot be read is recorded as an error with its one-line message; if it changes
later (a stalled writer finished), it is taken again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from threading import Event

from cdinn.errors import InputError
from cdinn.io import PATTERN_SUFFIXES, Result, read_pattern, write_result
from cdinn.prepare.cxi import input_record
from cdinn.watch.ledger import Entry, Ledger

IGNORED_SUFFIXES = (".part", ".tmp")

Processor = Callable[[dict[str, tuple]], Iterator[tuple[str, Result | InputError]]]
"""name -> (intensity, mask) in; (name, Result or InputError) out, as each is done."""

Later = Callable[[tuple, Result], Iterator[Result] | None]
"""(intensity, mask) and a first result in; None when nothing is left to do, else an iterator
of improved results, one step at a time (run when no scan is waiting)."""


def eligible(path: Path) -> bool:
    """Whether ``path`` looks like a pattern the watcher should take (not whether it is complete)."""
    name = path.name
    return (not name.startswith(".") and path.suffix.lower() in PATTERN_SUFFIXES
            and not name.lower().endswith(IGNORED_SUFFIXES))


class Watcher:
    """Process every pattern that lands in ``in_dir`` into ``out_dir``.

    Parameters
    ----------
    in_dir, out_dir : folders (``out_dir`` is created; it must not be ``in_dir``)
    process : the inversion (:func:`network_processor` or :func:`phase_processor`)
    method : the method in full (model and refinement, or recipe), for the page's header
    label : the method in a word, recorded per file (model name, or "phase retrieval")
    fmt : result suffix (``.h5``, ``.cxi``, ``.npz``)
    settle : seconds a file's size and time must stay unchanged before it is taken
    max_batch : most files taken at once (those of one shape share a network batch)
    log : where one line per result goes (None: nowhere)
    later : work that may improve a result after it was written (:func:`later_processor`): its
        steps run one at a time while no scan waits, each improvement rewrites the result
    """

    def __init__(self, in_dir: Path, out_dir: Path, process: Processor, method: str, label: str = "", fmt: str = ".h5",
                 settle: float = 0.3, max_batch: int = 16, log: Callable[[str], None] | None = print,
                 later: Later | None = None):
        self.in_dir, self.out_dir = Path(in_dir), Path(out_dir)
        self.process, self.method, self.label, self.fmt = process, method, label or method, fmt
        self.later = later
        # results still being improved: (name, version processed, steps)
        self.pending: deque[tuple[str, tuple[int, int], Iterator[Result]]] = deque()
        self.settle, self.max_batch, self.log = settle, max_batch, log
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.out_dir)
        self.candidates: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, stable since)
        self.queue: deque[str] = deque(n for n, e in self.ledger.entries.items() if e.state == "queued")

    @property
    def backlog(self) -> int:
        """Files waiting: queued, or seen but not yet complete."""
        return len(self.queue) + len(self.candidates)

    def observe(self, path: Path) -> None:
        """Note a created/changed/removed file (from the file watcher or a folder scan)."""
        if path.parent.resolve() != self.in_dir.resolve() or not eligible(path):
            return
        try:
            st = path.stat()
        except FileNotFoundError:
            self.candidates.pop(path.name, None)
            return
        if not path.is_file() or self.ledger.is_done(path.name, st.st_size, st.st_mtime_ns) or path.name in self.queue:
            return
        old = self.candidates.get(path.name)
        if old is None or old[:2] != (st.st_size, st.st_mtime_ns):
            self.candidates[path.name] = (st.st_size, st.st_mtime_ns, time.monotonic())

    def scan(self) -> None:
        """Look at every file in ``in_dir`` (at start, and as a safety net between events)."""
        for path in sorted(self.in_dir.iterdir()):
            self.observe(path)

    def promote(self) -> None:
        """Queue the candidates that have been stable for ``settle`` seconds."""
        now = time.monotonic()
        for name, (size, mtime_ns, since) in list(self.candidates.items()):
            try:
                st = (self.in_dir / name).stat()
            except FileNotFoundError:
                del self.candidates[name]
                continue
            if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                self.candidates[name] = (st.st_size, st.st_mtime_ns, now)
            elif now - since >= self.settle:
                del self.candidates[name]
                # arrival = first sight of this version, so latency counts the settling time too
                self.ledger.update(name, size=size, mtime_ns=mtime_ns, state="queued", arrived=time.time() - (now - since))
                self.queue.append(name)

    def run_batch(self) -> int:
        """Read and invert up to ``max_batch`` queued files; returns how many were handled."""
        names = [self.queue.popleft() for _ in range(min(self.max_batch, len(self.queue)))]
        loaded: dict[str, tuple] = {}
        for name in names:
            self.ledger.update(name, state="running")
            try:
                loaded[name] = read_pattern(self.in_dir / name)
            except InputError as exc:
                self._record(name, exc)
        for name, result in self.process(loaded):
            steps = None if self.later is None or isinstance(result, InputError) else self.later(loaded[name], result)
            entry = self._record(name, result, loaded[name][0].shape, refining=steps is not None)
            if steps is not None and entry is not None:
                self.pending.append((name, (entry.size, entry.mtime_ns), steps))
        return len(names)

    def improve(self) -> None:
        """One step of the oldest pending improvement; a better result replaces the written one."""
        name, version, steps = self.pending[0]
        entry = self.ledger.entries.get(name)
        current = entry is not None and entry.state == "done" and (entry.size, entry.mtime_ns) == version
        step = next(steps, None) if current else None
        if step is None:  # finished, or the file came back as a new version meanwhile
            self.pending.popleft()
            if current:
                self.ledger.update(name, refining=False, refined=time.time())
            return
        if step.chi2 < entry.chi2:
            self._record(name, step, step.object.shape, refining=True, improved=True)

    def _record(self, name: str, result: Result | InputError, shape: tuple[int, ...] = (), refining: bool = False,
                improved: bool = False) -> Entry | None:
        """Write a result (or record an error) and its ledger entry; ``improved``: it replaces
        this version's earlier result."""
        if isinstance(result, InputError):
            self.ledger.update(name, state="error", message=str(result), finished=time.time())
            if self.log:
                self.log(f"{name}: error: {result}")
            return None
        result.provenance.update(input_record(self.in_dir / name, shape))
        dest = self.ledger.entries[name].result if improved else self._result_name(name)
        write_result(self.out_dir / dest, result)
        now = time.time()
        entry: Entry = self.ledger.update(name, state="done", result=dest, chi2=float(result.chi2), method=self.label,
                                          seconds=result.provenance.get("timings", {}).get("total_s"),
                                          noise=result.provenance.get("chi2_over_noise_floor"), message="",
                                          refining=refining, **({"refined": now} if improved else {"finished": now, "refined": None}))
        if self.log:
            how = "improved" if improved else f"({entry.latency_s:.2f} s from arrival)"
            self.log(f"{name}: chi2 {result.chi2:.4g}  {how} -> {self.out_dir / dest}")
        return entry

    def _result_name(self, name: str) -> str:
        stem = Path(name).stem
        taken = {e.result for n, e in self.ledger.entries.items() if n != name}
        return f"{stem}{self.fmt}" if f"{stem}{self.fmt}" not in taken else f"{name}{self.fmt}"

    def run(self, stop: Event, once: bool = False, poll: float = 0.1) -> None:
        """Watch until ``stop`` is set (SIGINT/SIGTERM) — or, with ``once``, until the folder's
        current files are done. The batch in progress always finishes; the ledger is on disk
        after every change. Improvements not finished when it stops are dropped: those scans
        keep the result they have."""
        try:
            self._run(stop, once, poll)
        finally:
            for name, version, _ in self.pending:
                entry = self.ledger.entries.get(name)
                if entry is not None and entry.refining and (entry.size, entry.mtime_ns) == version:
                    self.ledger.update(name, refining=False)
            self.pending.clear()

    def _run(self, stop: Event, once: bool, poll: float) -> None:
        from watchfiles import watch

        self.scan()
        if once:
            while not stop.is_set() and (self.candidates or self.queue or self.pending):
                self.promote()
                if self.queue:
                    self.run_batch()
                elif self.pending and not self.candidates:
                    self.improve()
                else:
                    time.sleep(poll)
            return
        for changes in watch(self.in_dir, stop_event=stop, yield_on_timeout=True, rust_timeout=int(poll * 1000),
                             debounce=int(poll * 1000), recursive=False, raise_interrupt=False):
            for _, path in changes:
                self.observe(Path(path))
            self.promote()
            while self.queue and not stop.is_set():
                self.run_batch()
                self.scan()  # what arrived meanwhile
                self.promote()
            if self.pending and not self.candidates and not stop.is_set():
                self.improve()  # one step, then look for new scans again


def network_processor(model, refine: str, device, **options) -> Processor:
    """Invert with a warm network: a batch per shape, then each pattern refined (``cdinn invert``)."""
    from cdinn.pipeline import invert_many

    def process(loaded: dict[str, tuple]) -> Iterator[tuple[str, Result | InputError]]:
        yield from invert_many(loaded, model, refine, device=device, **options)

    return process


def later_processor(model, device, **options) -> Later:
    """``cdinn invert``'s retries of a stagnated result (:func:`cdinn.pipeline.inversion.later_retries`),
    for a :func:`network_processor` that runs the default refinement with ``retry=False``."""
    from cdinn.pipeline.inversion import later_retries, needs_retry

    def later(loaded: tuple, first: Result) -> Iterator[Result] | None:
        return later_retries(loaded[0], loaded[1], model, first, device=device, **options) if needs_retry(first) else None

    return later


def phase_processor(recipe: str, device, seed: int | None = None, starts: int = 1) -> Processor:
    """Classical phase retrieval of each pattern (``cdinn phase``)."""
    from cdinn.retrieval import phase_retrieval

    def process(loaded: dict[str, tuple]) -> Iterator[tuple[str, Result | InputError]]:
        for name, (intensity, mask) in loaded.items():
            try:
                result = phase_retrieval(intensity, recipe, starts=starts, mask=mask, device=device, seed=seed, progress=False)
            except InputError as exc:
                yield name, exc
                continue
            result.provenance["recipe"] = recipe
            yield name, result

    return process
