"""Atomic writes leave whole files with the usual permissions (0o666 minus the umask)."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from flare_eval.io import atomic_write_text
from flare_eval.io.atomic import atomic_path
from flare_eval.io.lock import LOCK_NAME
from flare_eval.phantoms import write_phantom_set

# The umask is per process and read once, so each case runs in a fresh interpreter.
_WRITE_ALL = """\
import os, sys
os.umask(int(sys.argv[1], 8))
from pathlib import Path
import numpy as np, pandas as pd
from flare_eval.cli.main import main
from flare_eval.io import atomic_write_text, write_label, write_table
root, out = Path(sys.argv[2]), Path(sys.argv[3])
code = main(["score", "--pred", str(root / "predictions"), "--gt", str(root / "labels"),
             "--out", str(out / "score")])
assert code == 0, code
atomic_write_text(out / "report" / "report.html", "<html></html>")
write_table(pd.DataFrame({"a": [1]}), out / "t.parquet")
write_label(out / "l.nii.gz", np.zeros((2, 2, 2), np.uint8), affine=np.eye(4))
"""


@pytest.fixture(scope="module")
def one_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("one_case")
    write_phantom_set(root, cases=1, seed=3, shape=(24, 24, 16), spacing_mm=(8.0, 8.0, 10.0),
                      prediction_quality="good")
    return root


@pytest.mark.parametrize(("umask", "mode"), [(0o027, 0o640), (0o002, 0o664)])
def test_score_outputs_and_reports_get_the_usual_mode(one_case, tmp_path, umask, mode):
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-c", _WRITE_ALL, oct(umask)[2:], str(one_case), str(out)],
                   check=True, capture_output=True, text=True)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    names = {p.relative_to(out).as_posix() for p in files}
    # score's own tables, the cached case record, a report page, Parquet and NIfTI writers
    assert {"score/per_case.csv", "score/scores.txt", "score/run.json",
            "report/report.html", "t.parquet", "l.nii.gz"} <= names
    assert {p.relative_to(out).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in files} \
        == {name: oct(mode) for name in names}
    # no temporary file left; the folder's lock (io/lock.py) stays, it only names its last holder
    assert not [n for n in names if Path(n).name.startswith(".") and Path(n).name != LOCK_NAME]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "table.csv"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError, match="writer broke"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer broke")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]
