"""Single entry point of the cdinn benchmarks (``make bench``).

    .venv/bin/python benchmarks/run.py                  # every section, full size (~20 min on 2 cores)
    .venv/bin/python benchmarks/run.py --quick          # smoke version of every section (~2 min)
    .venv/bin/python benchmarks/run.py --only cohere    # one section (repeatable: --only a --only b)
    .venv/bin/python benchmarks/run.py --list           # the sections found

Convention for sections
-----------------------
Every module ``benchmarks/bench_<name>.py`` is a section, discovered automatically. It exposes

- ``main(quick: bool) -> str``: runs the measurements and returns markdown (tables and short
  notes; no top-level ``#`` heading, ``###`` at most). Progress goes to stderr.
- optional ``TITLE`` (str): the section heading; default ``<name>``.
- optional ``ORDER`` (int): position in the results file; default 100, ties by name.
- optional ``RESULTS`` (str): stem of the results file the section belongs to; default
  ``"retrieval"`` (i.e. ``benchmarks/results/retrieval.md``).
- optional ``available() -> str | None``: why the section cannot run on this machine (e.g. no
  CUDA device), or ``None``. A section that cannot run is skipped and its stored figures stay.

Each section's markdown is stored in ``benchmarks/results/sections/<name>.md`` with the date
and the machine, and ``benchmarks/results/<RESULTS>.md`` is reassembled from the stored
sections of that file, so ``--only`` refreshes one section and keeps the others. ``--quick``
writes under ``benchmarks/results/quick/`` and never touches the full results. Shared helpers
live in ``benchmarks/common.py``.

Timing rule: the machine is small and shared, so every claim is a ratio of variants measured
in the same process, interleaved, repeated, reported as the median.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# What the CLI does (cdinn/cli/main.py), before numpy loads: spinning OpenBLAS threads would slow
# the torch call timed right after each numpy scoring, and glibc's adaptive mmap threshold the
# allocating tensor code.
from cdinn.runtime import tune_process  # noqa: E402

tune_process()

import torch  # noqa: E402
from common import ROOT, log, machine  # noqa: E402

RESULTS_DIR = HERE / "results"


def discover() -> list[tuple[str, object]]:
    """(name, module) of every ``bench_<name>.py``, in ORDER then name order."""
    found = []
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem[len("bench_"):]
        module = importlib.import_module(path.stem)
        if not callable(getattr(module, "main", None)):
            log(f"skipping {path.name}: no main(quick) function")
            continue
        found.append((name, module))
    return sorted(found, key=lambda nm: (getattr(nm[1], "ORDER", 100), nm[0]))


def header_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{datetime.date.today().isoformat()}; {cpu}; {machine()}; Python {platform.python_version()}"


def assemble(stem: str, sections: list[tuple[str, object]], out_dir: Path) -> Path | None:
    """Rebuild ``<stem>.md`` from the stored section files that belong to it (``None``: there are none)."""
    parts = [
        f"# cdinn benchmarks: {stem}",
        "",
        "Written by `benchmarks/run.py` (`make bench`); each section says when and where it ran. "
        "Timings on a small shared CPU are noisy: every claim is a ratio of variants measured in "
        "the same process, interleaved, repeated, and summarised by the median.",
    ]
    found = [out_dir / "sections" / f"{name}.md" for name, module in sections
             if getattr(module, "RESULTS", "retrieval") == stem]
    found = [p for p in found if p.exists()]
    if not found:  # e.g. only a section that could not run here
        return None
    for stored in found:
        parts += ["", stored.read_text().rstrip()]
    path = out_dir / f"{stem}.md"
    path.write_text("\n".join(parts) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke version (results under results/quick/)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="run only this section")
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    sections = discover()
    if args.list:
        for name, module in sections:
            print(f"{name:20s} {getattr(module, 'TITLE', name)}  -> results/{getattr(module, 'RESULTS', 'retrieval')}.md")
        return 0
    names = [n for n, _ in sections]
    unknown = [n for n in args.only if n not in names]
    if unknown:
        print(f"unknown section(s) {', '.join(unknown)}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    selected = [(n, m) for n, m in sections if not args.only or n in args.only]

    out_dir = RESULTS_DIR / "quick" if args.quick else RESULTS_DIR
    (out_dir / "sections").mkdir(parents=True, exist_ok=True)
    failed = []
    t_all = time.perf_counter()
    threads = torch.get_num_threads()
    for name, module in selected:
        title = getattr(module, "TITLE", name)
        reason = module.available() if callable(getattr(module, "available", None)) else None
        if reason:
            log(f"section {name} skipped: {reason} (its stored figures, if any, stay)")
            continue
        log(f"section {name}: {title}")
        torch.set_num_threads(threads)  # whatever an earlier section set, each starts alike
        header = header_line()
        t0 = time.perf_counter()
        try:
            body = module.main(quick=args.quick)
        except Exception:  # one broken section must not lose the others' figures
            traceback.print_exc()
            failed.append(name)
            continue
        elapsed = time.perf_counter() - t0
        text = (
            f"## {title}\n\n_{header}; section ran in {elapsed:.0f} s"
            f"{' (--quick)' if args.quick else ''}; `benchmarks/run.py --only {name}`._\n\n{body.strip()}\n"
        )
        (out_dir / "sections" / f"{name}.md").write_text(text)
        log(f"section {name} done in {elapsed:.0f} s")
    for stem in sorted({getattr(m, "RESULTS", "retrieval") for _, m in selected}):
        path = assemble(stem, sections, out_dir)
        if path is not None:
            log(f"wrote {path.relative_to(ROOT)}")
    log(f"total {time.perf_counter() - t_all:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
