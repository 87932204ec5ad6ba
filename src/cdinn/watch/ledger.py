"""The watcher's ledger: every input file's state, kept in OUT_DIR so that a restart on the same
folders processes only what is new (exactly once).

A file is identified by its name in IN_DIR and its (size, modification time): a file rewritten
later is new again. States: ``queued``, ``running``, ``done``, ``error`` (with its one-line
message). The ledger is JSON, rewritten atomically after every change of state.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cdinn.errors import InputError
from cdinn.io.atomic import atomic_path

LEDGER_NAME = ".cdinn-watch.json"
STATES = ("queued", "running", "done", "error")


@dataclass
class Entry:
    """One input file as the watcher knows it.

    Attributes
    ----------
    name : file name in IN_DIR
    size, mtime_ns : identity of the version processed
    state : one of :data:`STATES`
    arrived : when the watcher first saw this version (epoch seconds)
    finished : when its result (or error) was recorded
    result : result file name in OUT_DIR
    message : the error's one line
    chi2, method, seconds : what the result reports (chi², model or recipe, compute time)
    noise : chi² over the counting-noise floor (None when the pattern is not photon counts);
        above 1 the result fits worse than the true object would
    refining : the written result may still be improved (retries run between scans)
    refined : when the improvement ended (or last replaced the result)
    """

    name: str
    size: int
    mtime_ns: int
    state: str = "queued"
    arrived: float = field(default_factory=time.time)
    finished: float | None = None
    result: str = ""
    message: str = ""
    chi2: float | None = None
    method: str = ""
    seconds: float | None = None
    noise: float | None = None
    refining: bool = False
    refined: float | None = None

    @property
    def latency_s(self) -> float | None:
        """From arrival to result on disk."""
        return None if self.finished is None else self.finished - self.arrived

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), latency_s=self.latency_s)


class Ledger:
    """The states of all files, persisted in ``out_dir / LEDGER_NAME``; thread-safe.

    ``version`` grows with every change, so that a live page knows when to refresh.
    """

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / LEDGER_NAME
        self.entries: dict[str, Entry] = {}
        self.version = 0
        self.lock = threading.Lock()
        if self.path.exists():
            try:
                raw = json.loads(self.path.read_text())
                fields = set(Entry.__dataclass_fields__)
                self.entries = {k: Entry(**{f: v for f, v in e.items() if f in fields}) for k, e in raw["files"].items()}
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
                raise InputError(f"{self.path}: not a cdinn watch ledger (corrupt?); move it away to start afresh") from None
        for entry in self.entries.values():
            # A run killed mid-way left these unfinished: they are done again.
            if entry.state in ("queued", "running"):
                entry.state = "queued"
            entry.refining = False  # an improvement in progress ends with the run that made it

    def is_done(self, name: str, size: int, mtime_ns: int) -> bool:
        """Whether this version of ``name`` already has a result or a recorded error."""
        e = self.entries.get(name)
        return e is not None and e.size == size and e.mtime_ns == mtime_ns and e.state in ("done", "error")

    def update(self, name: str, **changes: Any) -> Entry:
        """Change (or create, with ``size`` and ``mtime_ns``) ``name``'s entry and save the ledger."""
        with self.lock:
            entry = self.entries.get(name)
            if entry is None or ("size" in changes and (entry.size, entry.mtime_ns) != (changes["size"], changes["mtime_ns"])):
                entry = Entry(name=name, size=changes.pop("size"), mtime_ns=changes.pop("mtime_ns"))
                self.entries[name] = entry
            else:
                changes.pop("size", None)
                changes.pop("mtime_ns", None)
            for k, v in changes.items():
                setattr(entry, k, v)
            self.version += 1
            self._save()
            return entry

    def snapshot(self) -> list[dict[str, Any]]:
        """All entries as dicts, newest arrival first."""
        with self.lock:
            return [e.to_dict() for e in sorted(self.entries.values(), key=lambda e: e.arrived, reverse=True)]

    def _save(self) -> None:
        payload = {"format": "cdinn watch ledger 1", "files": {k: asdict(e) for k, e in self.entries.items()}}
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(payload, indent=1))
