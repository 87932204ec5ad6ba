import hashlib
import io
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bad_inputs import CASES, workspace  # noqa: E402

from cdinn.cli.main import main  # noqa: E402


def _state(root: Path) -> dict[str, str]:
    """Every file under ``root`` and its content hash (folders too, as markers)."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def run_case(root: Path, files: dict[str, str], argv: list[str]) -> tuple[int, str, bool]:
    """(exit status, stderr, whether the folder is exactly as before)."""
    before = _state(root)
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        try:
            code = main([a.format(**files) for a in argv] + (["-q"] if argv[0] in ("phase", "invert", "demo") else []))
        except SystemExit as exc:  # argparse
            code = int(exc.code)
    return code, err.getvalue(), _state(root) == before


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    files = workspace(root)
    yield root, files
    Path(files["readonly"]).chmod(0o755)


@pytest.mark.parametrize("command, what, argv", CASES, ids=[f"{c}: {w}" for c, w, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(ws, command, what, argv):
    if what == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    if what == "output in a read-only folder" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    root, files = ws
    code, err, unchanged = run_case(root, files, argv)
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}: {err[-800:]}"
    assert len(lines) == 1 and "Traceback" not in err, err[-800:]
    assert unchanged, "something was written or changed"
