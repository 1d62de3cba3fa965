"""Codabench / CodaLab: a scoring program bundle, and the program itself.

:func:`write_bundle` writes ``OUT/scoring_program/`` (zip it and upload it as the task's scoring
program) and ``OUT/competition.yaml`` (the ``leaderboards`` section, to merge into the
competition bundle's ``competition.yaml``).  The compute worker runs the program in the
competition's docker image (which must have flare-eval installed) with the working directory
``/app/program``, the command of ``metadata.yaml``, the reference data in ``/app/input/ref`` and
the submission's files in ``/app/input/res``; it reads ``/app/output/scores.json``.

:func:`run_scoring_program` (what the program's ``score.py`` calls) scores ``res`` against
``ref`` through :func:`flare_eval.scoring.score_folders`, the function behind ``flare-eval
score``, and writes into the output folder only:

- ``scores.json``: a flat object, one key per leaderboard column (the ``scores.txt`` keys),
  strict JSON: an undefined value (every reference unreadable) is ``null``, never NaN;
- ``scores.txt``: the same as ``key: value`` lines (the legacy file, read as YAML; ``null`` too);
- ``detailed_results.html``: the per-case table and the failed cases.

Never a file named ``metadata``: the worker writes its own there and fails if one exists.
"""

from __future__ import annotations

import html
import json
import tempfile
from pathlib import Path
from typing import Any

from flare_eval.io.tables import atomic_write_text, finite_json, write_finite_json
from flare_eval.platforms.paths import (
    CODABENCH_OUTPUT,
    CODABENCH_PROGRAM,
    CODABENCH_REF,
    CODABENCH_RES,
)
from flare_eval.definition import load_definition, to_toml
from flare_eval.presets import Preset
from flare_eval.scoring.batch import ScoreOptions, ScoreRun, score_folders
from flare_eval.scoring.outputs import per_case_table

__all__ = ["SETTINGS_FILE", "leaderboard_keys", "write_bundle", "run_scoring_program"]

#: The challenge definition the program scores with, beside ``metadata.yaml`` (TOML, as
#: ``flare-eval presets show`` writes it).
SETTINGS_FILE = "challenge.toml"

_SCORE_PY = '''\
"""Codabench scoring program written by 'flare-eval bundle codabench' (flare-eval {version}).

Runs in the competition's docker image, which needs flare-eval installed; the rules are the
challenge definition {settings} beside it.
"""

import sys
from pathlib import Path

from flare_eval.platforms.codabench import run_scoring_program

sys.exit(run_scoring_program(Path(__file__).resolve().parent))
'''


def leaderboard_keys(preset: Preset) -> list[str]:
    """The leaderboard columns, in order: ``Organ_DSC``, ``Organ_NSD`` (where the definition has
    organ classes), then the class columns of ``scores.txt`` (``Liver_DSC`` ... ``Lesion_NSD``)."""
    classes = [f"{c.name}_{metric}" for metric in ("DSC", "NSD") for c in preset.classes]
    return ["Organ_DSC", "Organ_NSD", *classes] if preset.organ_labels else classes


def _title(key: str) -> str:
    return key.replace("_", " ")


def _yaml_text(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(value)


def write_bundle(preset: Preset, out_dir: Path) -> list[Path]:
    """Write the scoring program and the leaderboard section for ``preset``; return the files."""
    from flare_eval import __version__

    program = out_dir / "scoring_program"
    program.mkdir(parents=True, exist_ok=True)
    written = []
    metadata = program / "metadata.yaml"
    atomic_write_text(metadata, f"# flare-eval {__version__} scoring program, preset {preset.name}, "
                                f"definition sha256 {preset.content_sha256}\n"
                                f"command: python3 {CODABENCH_PROGRAM}/score.py\n")
    score_py = program / "score.py"
    atomic_write_text(score_py, _SCORE_PY.format(version=__version__, settings=SETTINGS_FILE))
    settings = program / SETTINGS_FILE
    atomic_write_text(settings, to_toml(preset))
    lines = [f"# columns of the flare-eval scoring program, preset {preset.name}, definition "
             f"sha256 {preset.content_sha256}",
             "leaderboards:",
             "  - index: 0",
             f"    title: {_yaml_text(f'Results ({preset.name})')}",
             f"    key: {_yaml_text(preset.name)}",
             "    submission_rule: Force_Last",
             "    columns:"]
    for index, key in enumerate(leaderboard_keys(preset)):
        lines += [f"      - title: {_yaml_text(_title(key))}",
                  f"        key: {_yaml_text(key)}",
                  f"        index: {index}",
                  "        sorting: desc",
                  f"        precision: {preset.decimals}"]
    competition = out_dir / "competition.yaml"
    atomic_write_text(competition, "\n".join(lines) + "\n")
    written += [metadata, score_py, settings, competition]
    return written


def _detailed_html(run: ScoreRun, preset: Preset, scores: dict[str, float | None]) -> str:
    table = per_case_table(run.records, preset)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v if isinstance(v, str) else f'{v:.4f}')}</td>"
                         for v in row) + "</tr>"
        for row in table.itertuples(index=False))
    failed = "".join(f"<li>{html.escape(f'{r.case}: {r.status}: {r.message}')}</li>"
                     for r in run.failed) or "<li>none</li>"
    summary = "".join(f"<tr><th>{html.escape(k)}</th><td>{'null' if v is None else f'{v:.4f}'}</td></tr>"
                      for k, v in scores.items())
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>flare-eval results</title>"
            "</head><body>"
            f"<h1>Scores (preset {html.escape(preset.name)}, definition sha256 "
            f"{preset.content_sha256})</h1><table>{summary}</table>"
            f"<h2>Failed cases</h2><ul>{failed}</ul>"
            f"<h2>Per case</h2><table><tr>{head}</tr>{rows}</table></body></html>\n")


def run_scoring_program(
    program: Path = CODABENCH_PROGRAM,
    *,
    ref: Path = CODABENCH_REF,
    res: Path = CODABENCH_RES,
    output: Path = CODABENCH_OUTPUT,
) -> int:
    """Score ``res`` against ``ref`` with the program's preset; write the three score files.

    Returns 0 once the scores are written (failed cases are scored, as by ``flare-eval score``,
    and listed in ``detailed_results.html``), 3 with a one-line message when nothing can be
    scored (no settings, no references).
    """
    import sys

    try:
        preset = load_definition(program / SETTINGS_FILE)
        with tempfile.TemporaryDirectory(prefix="flare-eval-codabench-") as scratch:
            run = score_folders(res, ref, Path(scratch), options=ScoreOptions(preset=preset))
    except (OSError, ValueError) as err:
        # InputError and ConfigError are ValueErrors whose message names the file or item
        message = getattr(err, "message", str(err))
        print(f"flare-eval scoring program: error: {message}", file=sys.stderr)
        return 3
    scores: dict[str, Any] = finite_json({key: run.summary[key] for key in leaderboard_keys(preset)})
    output.mkdir(parents=True, exist_ok=True)
    write_finite_json(output / "scores.json", scores)
    atomic_write_text(output / "scores.txt", "".join(
        f"{key}: {'null' if value is None else f'{value:.4f}'}\n" for key, value in scores.items()))
    atomic_write_text(output / "detailed_results.html", _detailed_html(run, preset, scores))
    print(f"flare-eval: preset {preset.name} (sha256 {preset.content_sha256}), "
          f"{len(run.records)} cases scored, {len(run.failed)} failed; "
          + ", ".join(f"{key} {scores[key]}" for key in list(scores)[:2]))
    return 0
