"""Bad input, counted (issue 16): the corpus of ``tests/bad_inputs.py`` run through the CLI.

A case is clean when the command exits 2 with one line on stderr and no traceback, writes
nothing and leaves every input byte-identical. Also counted: the attacks of the issue, each
with what happens now. ``docs/reliability.md`` quotes this section.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

from common import ROOT, log, table

sys.path.insert(0, str(ROOT / "tests"))
from bad_inputs import CASES, workspace  # noqa: E402
from test_bad_inputs import run_case  # noqa: E402

TITLE = "Bad input: the corpus, by command"
ORDER = 90
RESULTS = "reliability"


def main(quick: bool) -> str:
    tried, clean, unclean = Counter(), Counter(), []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = workspace(root)
        try:
            for command, what, argv in CASES:
                if what == "output in a read-only folder" and os.geteuid() == 0:
                    continue  # root writes anywhere: not a bad input for root
                code, err, unchanged = run_case(root, files, argv)
                tried[command] += 1
                ok = code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err and unchanged
                clean[command] += ok
                if not ok:
                    unclean.append(f"{command}: {what} (exit {code})")
        finally:
            Path(files["readonly"]).chmod(0o755)
    log(f"reliability: {sum(clean.values())}/{sum(tried.values())} clean")
    rows = [[f"`cdinn {c}`", tried[c], clean[c]] for c in tried]
    rows.append(["**all**", sum(tried.values()), sum(clean.values())])
    return "\n".join([
        "Each case: exit status 2, one line on stderr, no traceback, no file written or changed.", "",
        table(["command", "cases tried", "clean"], rows), "",
        "Not clean: " + ("; ".join(unclean) if unclean else "none."),
    ])
