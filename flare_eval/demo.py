"""A whole synthetic challenge without data or docker: phantoms, simulated teams, scoring,
ranking with the bootstrap and the HTML report.

Layout of the output folder::

    challenge/images, challenge/labels     phantoms (``flare-eval phantoms``)
    submissions/<team>/                     each simulated team's predictions
    results/<team>/                         ``flare-eval score`` outputs + a simulated runs.csv
    results/ranking/                        ``flare-eval rank`` outputs
    figures/                                every figure as PNG, SVG and CSV
    report.html                             the self-contained report

The efficiency values are simulated (no container runs): each team has a typical runtime and
peak GPU memory, drawn per case around them.  The last team fails its last case or two
(a crash and a run without output, both with no prediction file), so that the report shows
failed cases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from flare_eval.errors import ConfigError
from flare_eval.typing import StrPath

__all__ = ["TeamProfile", "TEAM_PROFILES", "simulate_runs", "run_demo"]


@dataclass(frozen=True)
class TeamProfile:
    """A simulated team: segmentation quality and efficiency.

    Attributes
    ----------
    name
        Team folder name.
    quality
        A key of :data:`flare_eval.phantoms.QUALITY_PROFILES`.
    runtime_s
        Typical wall-clock time per case (s).
    gpu_mib
        Typical peak GPU memory (MiB).
    """

    name: str
    quality: str
    runtime_s: float
    gpu_mib: float


#: The simulated teams, in the order ``--teams N`` takes them: accuracy and efficiency trade
#: off differently so that the criteria disagree and the ranking is worth looking at.
TEAM_PROFILES: tuple[TeamProfile, ...] = (
    TeamProfile("aurora", "excellent", 9.0, 3500.0),
    TeamProfile("boreal", "good", 6.0, 2200.0),
    TeamProfile("cirrus", "excellent", 38.0, 9800.0),
    TeamProfile("delta", "fair", 4.0, 1800.0),
    TeamProfile("ember", "good", 14.0, 5200.0),
    TeamProfile("fjord", "poor", 7.0, 2600.0),
    TeamProfile("glacier", "fair", 22.0, 4000.0),
    TeamProfile("harbor", "poor", 55.0, 12000.0),
)
_SAMPLE_S = 0.1  # the GPU sampling period of the official harness


def simulate_runs(profile: TeamProfile, cases: list[str], *, failed: dict[str, str],
                  gpu_tolerance_mib: float, seed: int) -> list[dict[str, object]]:
    """Rows of a plausible ``runs.csv`` (columns of :data:`flare_eval.runner.RUNS_COLUMNS`).

    Parameters
    ----------
    profile
        The team.
    cases
        Case ids.
    failed
        ``case -> status`` of the cases whose container failed (e.g. ``crash``).
    gpu_tolerance_mib
        Memory under it is free in ``auc_gpu_over_tolerance_mibs``.
    seed
        Seed of the per-case draws.

    Notes
    -----
    The GPU trace is modelled as a ramp to the peak over the first 20 % of the run, then the
    peak: AUC = peak * time * 0.9 (rectangle sum) and the same for the trapezoid rule minus half
    a sample; above the tolerance only the part over it counts.
    """
    rng = np.random.default_rng(seed)
    start = datetime(2023, 7, 15, 9, 0, tzinfo=timezone.utc)
    rows: list[dict[str, object]] = []
    for case in cases:
        time_s = float(profile.runtime_s * rng.lognormal(0.0, 0.15))
        peak = float(profile.gpu_mib * rng.uniform(0.92, 1.04))
        status = failed.get(case, "ok")
        if status != "ok":  # a crash ends early, before the peak
            time_s, peak = time_s * 0.3, peak * 0.5
        n_samples = max(1, int(round(time_s / _SAMPLE_S)))
        auc = peak * time_s * 0.9
        over = max(0.0, peak - gpu_tolerance_mib) * time_s * 0.8
        finished = start + timedelta(seconds=time_s)
        rows.append({
            "case": case, "name": f"{case}_0000.nii.gz", "status": status,
            "exit_code": 0 if status == "ok" else 1, "oom_killed": False,
            "time_s": round(time_s, 2), "max_gpu_mib": round(peak),
            "auc_gpu_mibs": round(auc), "auc_gpu_trapz_mibs": round(auc - peak * _SAMPLE_S / 2),
            "auc_gpu_over_tolerance_mibs": round(over), "n_gpu_samples": n_samples,
            "started_at": start.isoformat(), "finished_at": finished.isoformat(),
            "message": "" if status == "ok" else "simulated failure: no prediction written",
        })
        start = finished + timedelta(seconds=2)
    return rows


def run_demo(out_dir: StrPath, *, cases: int = 8, teams: int = 5, n_bootstrap: int = 200,
             seed: int = 0, shape: tuple[int, int, int] | None = None,
             progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Build, score, rank and report a synthetic challenge.

    Parameters
    ----------
    out_dir
        Output folder (see the module docstring for its layout).
    cases
        Phantom cases (at least 2, for a bootstrap).
    teams
        Simulated teams, 1 to ``len(TEAM_PROFILES)``.
    n_bootstrap
        Bootstrap samples of the ranking (0: none).
    seed
        Seed of phantoms, predictions and efficiency draws.
    shape
        Phantom grid; the phantoms' default when None.
    progress
        Called as ``progress(stage, done, total)``.

    Returns
    -------
    pathlib.Path
        The report file ``out_dir/report.html``.

    Raises
    ------
    ConfigError
        Out-of-range ``cases``, ``teams`` or ``n_bootstrap``.
    """
    import pandas as pd

    from flare_eval.io import read_label, write_label, write_table
    from flare_eval.phantoms import DEFAULT_SHAPE, simulate_prediction, write_phantom_set
    from flare_eval.presets import FLARE23
    from flare_eval.ranking import rank_results
    from flare_eval.report.html import write_report
    from flare_eval.runner import RUNS_COLUMNS
    from flare_eval.scoring import ScoreOptions, score_folders

    if cases < 2:
        raise ConfigError(f"--cases must be at least 2, got {cases}")
    if not 1 <= teams <= len(TEAM_PROFILES):
        raise ConfigError(f"--teams must be 1 to {len(TEAM_PROFILES)}, got {teams}")
    if n_bootstrap < 0:
        raise ConfigError(f"--bootstrap must be 0 or more, got {n_bootstrap}")
    report = (lambda stage, done, total: None) if progress is None else progress
    out = Path(out_dir)
    profiles = TEAM_PROFILES[:teams]

    report("phantoms", 0, cases)
    ids = write_phantom_set(out / "challenge", cases=cases, seed=seed,
                            shape=shape or DEFAULT_SHAPE, prefix="demo")
    report("phantoms", cases, cases)
    labels = {case: read_label(out / "challenge" / "labels" / f"{case}.nii.gz") for case in ids}
    # the last team fails its last case (and, with enough cases, the one before)
    n_failed = 2 if cases >= 4 else 1
    failures = dict(zip(ids[::-1], ("crash", "no_output")[:n_failed])) if teams > 1 else {}
    total = teams * cases
    for t, profile in enumerate(profiles):
        failed = failures if t == teams - 1 else {}
        submission = out / "submissions" / profile.name
        for k, case in enumerate(ids):
            if case not in failed:
                label = labels[case]
                prediction = simulate_prediction(label.data, seed * 1000 + t * 100 + k,
                                                 quality=profile.quality)  # type: ignore[arg-type]
                write_label(submission / f"{case}.nii.gz", prediction, affine=label.affine)
            report("predictions", t * cases + k + 1, total)
        results = out / "results" / profile.name
        score_folders(submission, out / "challenge" / "labels", results,
                      options=ScoreOptions(preset=FLARE23))
        runs = simulate_runs(profile, ids, failed=failed, gpu_tolerance_mib=FLARE23.gpu_tolerance_mib,
                             seed=seed * 1000 + t)
        write_table(pd.DataFrame(runs, columns=list(RUNS_COLUMNS)), results / "runs.csv")
        report("scoring", t + 1, teams)
    report("ranking", 0, 1)
    rank_results(out / "results", out / "results" / "ranking", n_bootstrap=n_bootstrap, seed=seed)
    report("ranking", 1, 1)
    report("report", 0, 1)
    path = write_report(out / "results", out / "report.html", figures_dir=out / "figures")
    report("report", 1, 1)
    return path
