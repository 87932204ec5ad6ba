import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from cdinn.errors import InputError
from cdinn.io import read_result
from cdinn.simulate import faceted_crystal, simulate_pattern
from cdinn.watch import Ledger, Watcher, phase_processor

RECIPE = "ER**10"


def drop(folder: Path, name: str, seed: int = 0, size: int = 32) -> Path:
    """Deliver a 2D pattern as a beamline writer should: written under a .part name, renamed in."""
    pattern = simulate_pattern(faceted_crystal((size, size), oversampling=2.5, phase_range=1.0, seed=seed), photons=1e7, seed=seed)
    part = folder / f"{name}.part"
    with open(part, "wb") as fh:
        np.save(fh, pattern.numpy())
    final = folder / name
    os.replace(part, final)
    return final


class Counting:
    """A processor that records what it was given and delegates to phase retrieval."""

    def __init__(self):
        self.seen: list[str] = []
        self.inner = phase_processor(RECIPE, "cpu", seed=0)

    def __call__(self, loaded):
        self.seen.extend(loaded)
        yield from self.inner(loaded)


def test_ledger_persists_and_requeues_unfinished_work(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.update("a.npy", size=10, mtime_ns=1, state="done", result="a.h5")
    ledger.update("b.npy", size=11, mtime_ns=2, state="running")
    again = Ledger(tmp_path)
    assert again.is_done("a.npy", 10, 1) and not again.is_done("a.npy", 12, 1)  # a rewritten file is new
    assert again.entries["b.npy"].state == "queued"  # killed mid-way: done again
    (tmp_path / ".cdinn-watch.json").write_text("{ not json")
    with pytest.raises(InputError, match="not a cdinn watch ledger"):
        Ledger(tmp_path)


def test_a_file_is_taken_only_once_complete(tmp_path):
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    watcher = Watcher(inbox, out, Counting(), RECIPE, settle=0.3, log=None)
    growing = inbox / "slow.npy"
    growing.write_bytes(b"\x93NUMPY")  # a writer that has not finished
    for ignored in (".hidden.npy", "x.npy.part", "y.h5.tmp", "notes.txt"):
        (inbox / ignored).write_bytes(b"1")
    watcher.scan()
    assert set(watcher.candidates) == {"slow.npy"}
    for _ in range(3):  # it keeps growing: never queued
        time.sleep(0.15)
        with open(growing, "ab") as fh:
            fh.write(b"0" * 64)
        watcher.observe(growing)
        watcher.promote()
        assert not watcher.queue
    time.sleep(0.35)
    watcher.promote()
    assert list(watcher.queue) == ["slow.npy"]


def test_restart_processes_only_what_is_new_and_errors_do_not_stop_it(tmp_path):
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    for i in range(3):
        drop(inbox, f"p{i}.npy", seed=i)
    (inbox / "broken.npy").write_bytes(b"garbage that is not an array")
    first = Counting()
    Watcher(inbox, out, first, RECIPE, settle=0.0, log=None).run(threading.Event(), once=True)
    assert sorted(first.seen) == ["p0.npy", "p1.npy", "p2.npy"]
    ledger = json.loads((out / ".cdinn-watch.json").read_text())["files"]
    assert ledger["broken.npy"]["state"] == "error" and "not a NumPy array" in ledger["broken.npy"]["message"]
    assert all(ledger[f"p{i}.npy"]["state"] == "done" for i in range(3))
    result = read_result(out / "p1.h5")  # what cdinn phase would write, with its input recorded
    assert result.provenance["recipe"] == RECIPE and result.provenance["input"] == str((inbox / "p1.npy").resolve())
    second = Counting()
    Watcher(inbox, out, second, RECIPE, settle=0.0, log=None).run(threading.Event(), once=True)
    assert second.seen == []  # nothing new
    drop(inbox, "p1.npy", seed=7)  # rewritten: a new version
    drop(inbox, "p3.npy", seed=3)
    third = Counting()
    Watcher(inbox, out, third, RECIPE, settle=0.0, log=None).run(threading.Event(), once=True)
    assert sorted(third.seen) == ["p1.npy", "p3.npy"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _ledger_states(out: Path) -> dict:
    try:
        return {k: v["state"] for k, v in json.loads((out / ".cdinn-watch.json").read_text())["files"].items()}
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def test_watch_serves_a_live_page_a_browser_renders(tmp_path):
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cdinn.cli.main", "watch", str(inbox), "-o", str(out), "--phase",
                             "--recipe", RECIPE, "--serve", str(port), "--settle", "0.1", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        assert _wait_for(lambda: _get(base + "/api/scans") is not None), proc.stderr
        names = ["a.npy", "b.npy"]
        for i, name in enumerate(names):
            drop(inbox, name, seed=i)
        (inbox / "bad.npy").write_bytes(b"not an array")
        assert _wait_for(lambda: _ledger_states(out) == {"a.npy": "done", "b.npy": "done", "bad.npy": "error"})
        table = json.loads(_get(base + "/api/scans"))
        assert {s["name"]: s["state"] for s in table["scans"]} == {"a.npy": "done", "b.npy": "done", "bad.npy": "error"}
        # Photon counts have a noise floor; ten ER iterations from a random start are far above it.
        noise = {s["name"]: s["noise"] for s in table["scans"]}
        assert noise["a.npy"] > 1 and noise["bad.npy"] is None, noise
        assert json.loads(_get(base + "/api/scan/a.npy"))["slices"]  # what the page draws
        # Read-only, and no way out of OUT_DIR.
        for bad in ("/api/scan/..%2F..%2Fetc%2Fpasswd", "/api/scan/%2e%2e%2f.cdinn-watch.json", "/../../etc/passwd",
                    "/api/scan/bad.npy"):
            assert _status(base + bad) == 404, bad
        assert _status(base + "/api/scans", method="POST") == 405
        # The update stream tells a page about a scan that lands later.
        with urllib.request.urlopen(base + "/api/events", timeout=10) as stream:
            assert "a.npy" in stream.readline().decode()
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
        dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                              "--disable-background-networking", "--disable-component-update", "--disable-sync",
                              f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=10000", "--dump-dom",
                              base + "/?live=0"], capture_output=True, text=True, timeout=120).stdout
        for name, state in (("a.npy", "done"), ("b.npy", "done"), ("bad.npy", "error")):
            assert f'data-name="{name}" data-state="{state}"' in dom, dom[:2000]
        assert "not a NumPy array" in dom
        assert f'class="noise-high">{noise["a.npy"]:.2f}<' in dom, dom[:3000]
    finally:
        proc.send_signal(signal.SIGTERM)  # handled like Ctrl-C: finish, write the ledger, exit 0
        assert proc.wait(timeout=30) == 0
    assert not list(out.glob(".*.tmp"))


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None


def _status(url: str, method: str = "GET") -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_result_is_written_at_once_and_improved_while_no_scan_waits(tmp_path):
    """Work after a result (cdinn invert's retries) runs one step at a time between scans: a better
    step replaces the written result, a worse one does not, and a file delivered again drops it."""
    import dataclasses

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    calls = []

    def later(loaded, first):
        def steps():
            for factor in (0.5, 2.0, 0.25):  # better, worse, better
                calls.append(factor)
                yield dataclasses.replace(first, chi2=first.chi2 * factor)
        return steps()

    w = Watcher(inp, out, phase_processor(RECIPE, "cpu", seed=0), RECIPE, settle=0.0, log=None, later=later)
    drop(inp, "a.npy", seed=1)
    w.scan(), w.promote(), w.run_batch()
    entry = w.ledger.entries["a.npy"]
    first = entry.chi2
    assert entry.state == "done" and entry.refining and entry.finished is not None and calls == []
    assert read_result(out / "a.h5").chi2 == pytest.approx(first)
    for _ in range(4):
        w.improve()
    entry = w.ledger.entries["a.npy"]
    assert calls == [0.5, 2.0, 0.25] and not entry.refining and entry.refined is not None and not w.pending
    assert entry.chi2 == pytest.approx(first * 0.25) and read_result(out / "a.h5").chi2 == pytest.approx(first * 0.25)
    # a new version of the file while its improvement is pending: the stale steps are dropped
    drop(inp, "b.npy", seed=2)
    w.scan(), w.promote(), w.run_batch()
    time.sleep(0.01)
    drop(inp, "b.npy", seed=3)
    w.scan(), w.promote(), w.run_batch()
    assert len(w.pending) == 2
    w.improve()  # the first version's steps: dropped without a step
    assert len(w.pending) == 1 and w.ledger.entries["b.npy"].refining
    assert len(calls) == 3
    stop = threading.Event()
    stop.set()
    w.run(stop)  # stopped with work pending: the scan keeps its result, no longer marked refining
    assert not w.pending and not w.ledger.entries["b.npy"].refining and w.ledger.entries["b.npy"].state == "done"


def test_later_retries_end_where_invert_with_retries_ends():
    """Retries run after the first result give the result invert's default refinement gives with them."""
    from cdinn.models import load_model
    from cdinn.pipeline.inversion import invert, later_retries

    rng = np.random.default_rng(8007)  # a crystal the default refinement leaves above the noise floor
    params = {"oversampling": float(rng.uniform(2.5, 3.5)), "phase_range": float(rng.uniform(1.0, 4.8))}
    truth = faceted_crystal((64, 64, 64), seed=int(rng.integers(2**31)), **params)
    pattern = simulate_pattern(truth, photons=1e7, seed=int(rng.integers(2**31))).numpy()
    model = load_model("autophasenn-64")
    full = invert(pattern, model, retry=True)
    first = invert(pattern, model, retry=False)
    steps = list(later_retries(pattern, None, model, first))
    last = steps[-1] if steps else first
    assert len(steps) == len(full.provenance["retries"])
    assert last.chi2 == pytest.approx(full.chi2, rel=1e-6)
    assert np.allclose(last.object, full.object, atol=1e-5 * np.abs(full.object).max())
    assert [a["attempt"] for a in last.provenance["retries"]] == [a["attempt"] for a in full.provenance["retries"]]
