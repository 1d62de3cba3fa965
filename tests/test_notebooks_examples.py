"""Every notebook in ``notebooks/``, every script in ``examples/`` and the README's Python API
example run, on the demo data.

The scripts run as a user runs them (``python examples/X.py --out DIR``, in a fresh process,
warnings as errors); the notebooks are executed with nbclient on the ``python3`` kernel. Both
are found by globbing, so a new notebook or example is tested without editing this file.
Notebooks are stored without outputs: a fast test checks that.
"""

from __future__ import annotations

import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
#: Examples and notebooks that run a submission folder under bubblewrap.
NEEDS_BWRAP = {"run_submission_locally.py", "participant_self_check.ipynb"}
#: A line each script must print: proof that it got to its result, not merely exited 0.
EXPECTED_OUTPUT = {
    "score_two_folders.py": "failed case phantom_0002: missing_prediction",
    "rank_a_csv.py": "median Kendall's tau over 200 bootstrap samples",
    "radar_chart.py": "radar.png",
    "run_submission_locally.py": "all cases under the 15 s runtime tolerance: True",
    "majority_vote.py": "majority_vote on arrays: [0, 1, 0, 2]",
}


def _require_bubblewrap(tmp_path: Path) -> None:
    """Skip (fail in CI) where bubblewrap is absent or cannot build a sandbox."""
    from flare_eval.errors import RunnerError
    from flare_eval.runner import LocalBackend

    probe = tmp_path / "bwrap-probe"
    probe.mkdir()
    (probe / "predict.sh").write_text("true\n")
    try:
        LocalBackend(probe)
    except RunnerError as err:
        skip_or_fail(f"the local backend cannot run here: {err.message}")
    shutil.rmtree(probe)


def test_every_example_has_an_expected_output() -> None:
    assert EXAMPLES and NOTEBOOKS
    assert sorted(EXPECTED_OUTPUT) == sorted(p.name for p in EXAMPLES)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(notebook: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"{notebook.name}: cells {dirty} hold outputs; clear them before committing"


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    if script.name in NEEDS_BWRAP:
        _require_bubblewrap(tmp_path)
    result = subprocess.run(
        [sys.executable, "-W", "error", str(script), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}\n{result.stderr}"
    assert EXPECTED_OUTPUT[script.name] in result.stdout, result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(notebook: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("matplotlib")
    if notebook.name in NEEDS_BWRAP:
        _require_bubblewrap(tmp_path)
    monkeypatch.setenv("FLARE_EVAL_WORK", str(tmp_path / "work"))  # outputs stay in tmp_path
    monkeypatch.delenv("FLARE_EVAL_RESULTS", raising=False)  # always the built-in demo
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the kernel imports this checkout
    nb = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
              if o.output_type == "error"]
    assert not errors
    # a warning in the kernel is printed to stderr: treat it as pytest treats warnings, an error
    stderr = [o.text for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
              if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, f"{notebook.name} wrote to stderr:\n" + "".join(stderr)
    images = sum("image/png" in o.get("data", {}) for cell in nb.cells
                 if cell.cell_type == "code" for o in cell.outputs)
    assert images >= 2, f"{notebook.name}: expected its figures, got {images} images"


def _readme_python_api() -> tuple[str, str]:
    """The README's ``## Python API`` section: its phantoms command and its Python block."""
    section = (ROOT / "README.md").read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    command = re.search(r"`(flare-eval phantoms [^`]*)`", section)
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert command and code, "README.md: ## Python API lost its phantoms command or code block"
    return command.group(1), code.group(1)


@pytest.mark.slow
def test_readme_python_api_runs_as_pasted(tmp_path: Path) -> None:
    command, code = _readme_python_api()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the flare-eval of this checkout
    subprocess.run([sys.executable, "-m", "flare_eval", *command.split()[1:]], cwd=tmp_path,
                   check=True, capture_output=True, env=env, timeout=120)
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, f"README example failed:\n{result.stdout}\n{result.stderr}"
    lines = result.stdout.splitlines()
    # one line per FLARE23 class (13 organs + lesion), then the folder's summary
    assert [line.split()[0] for line in lines[:14]][:2] == ["Liver", "RK"]
    assert all(re.fullmatch(r"\s*\S+  DSC [01]\.\d{4}  NSD [01]\.\d{4}  HD95 (\d+\.\d|inf|nan) mm",
                            line) for line in lines[:14]), lines[:14]
    assert re.fullmatch(r"3 cases, organ DSC 0\.\d{4}, failed: \[\]", lines[14]), lines[14]
    assert (tmp_path / "demo" / "scores" / "scores.txt").is_file()
