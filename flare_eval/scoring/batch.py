"""Scoring a folder of predictions against a folder of references: resumable, parallel, atomic.

Every finished case is written at once to ``OUT/.flare-eval-cache/cases/<case>.json`` (atomic), with
the size and modification time of both input files.  Re-running the same command skips every
case whose record is there and whose inputs have not changed; a killed run loses at most the
cases in flight.  The cache remembers the configuration (preset, lesion options, folders): a run
into the same ``OUT`` with another configuration is refused rather than mixed.  The final tables
are written only when every case is done, each atomically, so no half-finished table is ever
presented as final.
"""

from __future__ import annotations


import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nibabel
import numpy as np
import scipy

from flare_eval.errors import ConfigError, InputError
from flare_eval.io import atomic_write_text, write_table
from flare_eval.io.layout import CHANNEL_SUFFIX, LABEL_EXTENSIONS, case_id, is_volume_file
from flare_eval.io.lock import die_with_parent, exclusive, output_errors
from flare_eval.presets import Preset
from flare_eval.scoring.case import CaseRecord, score_files
from flare_eval.scoring.outputs import (
    cases_table,
    lesion_instances_table,
    lesions_per_case_table,
    official_summary,
    per_case_table,
    scores_txt,
    tidy_table,
)

__all__ = ["ScoreOptions", "ScoreRun", "score_folders", "pair_files", "clear_cache", "CACHE_DIR"]

CACHE_DIR = ".flare-eval-cache"


@dataclass(frozen=True)
class ScoreOptions:
    """Everything that changes the numbers of a scoring run (recorded and checked on resume)."""

    preset: Preset
    strict: bool = False

    def fingerprint(self) -> dict[str, Any]:
        return {"preset": self.preset.describe()}


@dataclass(frozen=True)
class ScoreRun:
    """What :func:`score_folders` did: the records in case order and the counts by status."""

    records: list[CaseRecord]
    summary: dict[str, float]
    reused: int
    out_dir: Path

    @property
    def failed(self) -> list[CaseRecord]:
        return [r for r in self.records if r.status != "ok"]


def _volume_files(role: str, folder: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Volume files of ``folder`` by case id, and a note for each id with two files.

    A ``<id>.nii.gz`` beside another file of the case (``<id>.nii``, ``<id>.mha``...) is taken,
    as the official scorer opens that name, and the note names the file left out; two files of
    one case without a ``.nii.gz`` are refused rather than one picked.
    """
    files: dict[str, Path] = {}
    notes: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if not (path.is_file() and is_volume_file(path.name)):
            continue
        case = case_id(path)
        if case in files:
            kept, left = sorted((files[case], path), key=lambda p: not p.name.endswith(".nii.gz"))
            if not kept.name.endswith(".nii.gz"):
                raise InputError(
                    f"{role} folder {folder} holds two files of case {case}: {files[case].name} "
                    f"and {path.name}", hint="keep one file per case")
            notes[case] = (f"{folder} holds both {kept.name} and {left.name}: scored {kept.name}, "
                           f"left out {left.name}")
            path = kept
        files[case] = path
    return files, notes


def _refuse_image_folder(role: str, folder: Path, files: dict[str, Path], *,
                         matched: set[str]) -> None:
    """Refuse a folder of input images given as labels or predictions.

    Every file named ``<id>_0000`` and none of them a case of ``matched`` (the references, for
    predictions): the CT images, not labels, so every case would score 0 without a word.  An
    id may itself end in ``_0000``, hence "every file" and "none matched".
    """
    if not files or not all(case.endswith(CHANNEL_SUFFIX) for case in files) or matched & set(files):
        return
    example = next(iter(files.values())).name
    wanted = "references" if role == "--gt" else "predictions"
    raise InputError(
        f"{role} folder {folder} holds input images, not {wanted}: all {len(files)} files are "
        f"named <id>{CHANNEL_SUFFIX}.nii.gz (e.g. {example}), {wanted} are named <id>.nii.gz",
        hint=f"pass the folder of {wanted} (e.g. {'labels/' if role == '--gt' else 'predictions/'}"
        f" beside images/); predictions named <id>{CHANNEL_SUFFIX}.nii.gz must be renamed <id>.nii.gz",
    )


def pair_files(pred_dir: Path, gt_dir: Path
               ) -> tuple[list[tuple[Path, Path | None]], list[str], dict[str, str]]:
    """Pair every reference with the prediction of the same case id.

    Returns
    -------
    pairs
        ``(reference, prediction or None)`` in case-id order.
    extra
        Prediction file names with no reference (ignored, reported).
    ambiguous
        A note per case id with both a ``.nii.gz`` and a ``.nii`` file in either folder.

    Raises
    ------
    InputError
        When a folder is missing or holds no reference.
    """
    for role, folder in (("--gt", gt_dir), ("--pred", pred_dir)):
        if not folder.is_dir():
            raise InputError(f"{role} folder {folder} does not exist or is not a folder")
    references, ambiguous = _volume_files("--gt", gt_dir)
    if not references:
        raise InputError(f"--gt folder {gt_dir} holds no {' / '.join(LABEL_EXTENSIONS)} file")
    predictions, pred_ambiguous = _volume_files("--pred", pred_dir)
    for case, note in pred_ambiguous.items():
        ambiguous[case] = f"{ambiguous[case]}; {note}" if case in ambiguous else note
    _refuse_image_folder("--gt", gt_dir, references, matched=set())
    _refuse_image_folder("--pred", pred_dir, predictions, matched=set(references))
    pairs = [(path, predictions.get(case)) for case, path in references.items()]
    extra = sorted(predictions[c].name for c in set(predictions) - set(references))
    return pairs, extra, {c: n for c, n in ambiguous.items() if c in references}


def _noted(record: CaseRecord, note: str | None) -> CaseRecord:
    """``record`` with ``note`` first in its message (not cached: the folder may change)."""
    if not note:
        return record
    return replace(record, message=f"{note}; {record.message}" if record.message else note)


def _stamp(path: Path | None) -> list[int] | None:
    if path is None or not path.exists():
        return None
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _score_job(reference: Path, prediction: Path | None, options: ScoreOptions) -> dict[str, Any]:
    record = score_files(reference, prediction, preset=options.preset, strict=options.strict)
    return record.to_json()


def _prepare_cache(out_dir: Path, config: dict[str, Any]) -> Path:
    cache = out_dir / CACHE_DIR
    config_path = cache / "config.json"
    config = json.loads(json.dumps(config))  # tuples become lists, as they come back from disk
    if config_path.exists():
        previous = json.loads(config_path.read_text())
        if previous != config:
            changed = sorted(k for k in set(previous) | set(config) if previous.get(k) != config.get(k))
            raise ConfigError(
                f"{out_dir} holds scores made with another configuration (differs in: "
                f"{', '.join(changed)})",
                hint="use another --out folder, or --overwrite to discard the old scores",
            )
    (cache / "cases").mkdir(parents=True, exist_ok=True)
    atomic_write_text(config_path, json.dumps(config, indent=1, sort_keys=True))
    return cache / "cases"


def score_folders(
    pred_dir: Path,
    gt_dir: Path,
    out_dir: Path,
    *,
    options: ScoreOptions,
    workers: int = 1,
    executor: Executor | None = None,
    progress: Callable[[int, int, CaseRecord], None] | None = None,
    parquet: bool = False,
    overwrite: bool = False,
) -> ScoreRun:
    """Score every reference case and write the tables.

    Parameters
    ----------
    pred_dir, gt_dir
        Folders of ``<id>.nii.gz`` files (or ``.nii``, ``.mha``, ``.nrrd``; the two sides may
        differ), paired by case id.
    out_dir
        Output folder (see :mod:`flare_eval.scoring` for the files).
    options
        Preset, lesion options, strictness.
    workers
        Processes of the local pool (1 scores in this process).
    executor
        Any ``concurrent.futures.Executor`` (e.g. a dask.distributed client's executor) to use
        instead of the local pool.
    progress
        Called as ``progress(done, total, record)`` after every case.
    parquet
        Also write the tidy table as ``metrics_long.parquet`` (needs pyarrow).
    overwrite
        Discard the scores already in ``out_dir`` (once its lock is held) instead of resuming.

    Returns
    -------
    ScoreRun
    """
    pred_dir, gt_dir, out_dir = Path(pred_dir), Path(gt_dir), Path(out_dir)
    if parquet:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError("--parquet needs pyarrow", hint="pip install 'flare-eval[parquet]'") from None
    pairs, extra, ambiguous = pair_files(pred_dir, gt_dir)
    config = {
        **options.fingerprint(),
        "gt_dir": str(gt_dir.resolve()),
        "pred_dir": str(pred_dir.resolve()),
    }
    with exclusive(out_dir, option="--out", command="score"), output_errors(out_dir, option="--out"):
        if overwrite:
            clear_cache(out_dir)
        cases_dir = _prepare_cache(out_dir, config)
        records: dict[str, CaseRecord] = {}
        todo: list[tuple[Path, Path | None, list[Any]]] = []
        for reference, prediction in pairs:
            stamps = [_stamp(reference), _stamp(prediction)]
            cached = cases_dir / f"{case_id(reference)}.json"
            if cached.exists():
                entry = json.loads(cached.read_text())
                if entry["stamps"] == stamps:
                    records[case_id(reference)] = CaseRecord.from_json(entry["record"])
                    continue
            todo.append((reference, prediction, stamps))
        reused, total = len(records), len(pairs)

        def keep(record_json: dict[str, Any], stamps: list[Any]) -> None:
            record = CaseRecord.from_json(record_json)
            atomic_write_text(
                cases_dir / f"{record.case}.json", json.dumps({"stamps": stamps, "record": record_json})
            )
            records[record.case] = record
            if progress is not None:
                progress(len(records), total, record)

        started = time.time()
        if workers <= 1 and executor is None:
            for reference, prediction, stamps in todo:
                keep(_score_job(reference, prediction, options), stamps)
        else:
            own = executor is None
            pool = executor or ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent,
                                                       initargs=(os.getpid(),))
            try:
                futures = {pool.submit(_score_job, r, p, options): s for r, p, s in todo}
                for future in as_completed(futures):
                    keep(future.result(), futures[future])
            finally:
                if own:
                    pool.shutdown(cancel_futures=True)
        ordered = [_noted(records[case_id(reference)], ambiguous.get(case_id(reference)))
                   for reference, _ in pairs]
        summary = write_outputs(ordered, out_dir, options, extra=extra, elapsed_s=time.time() - started,
                                reused=reused, parquet=parquet)
        return ScoreRun(ordered, summary, reused, out_dir)


def write_outputs(
    records: list[CaseRecord],
    out_dir: Path,
    options: ScoreOptions,
    *,
    extra: list[str],
    elapsed_s: float,
    reused: int,
    parquet: bool = False,
) -> dict[str, float]:
    """Write every final table of a complete run together; return the official summary.

    Every table is first written into a staging folder; only when all are written (a full disk
    fails here, leaving the earlier tables untouched) are they moved into ``out_dir``, with the
    old ``run.json`` removed first and the new one moved last, so ``run.json`` says complete
    only over a complete set of tables.
    """
    staging = out_dir / CACHE_DIR / f"staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        summary = _stage_outputs(records, staging, options, extra=extra, elapsed_s=elapsed_s,
                                 reused=reused, parquet=parquet)
        (out_dir / "run.json").unlink(missing_ok=True)
        for path in sorted(staging.iterdir(), key=lambda p: p.name == "run.json"):
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _stage_outputs(
    records: list[CaseRecord],
    out_dir: Path,
    options: ScoreOptions,
    *,
    extra: list[str],
    elapsed_s: float,
    reused: int,
    parquet: bool,
) -> dict[str, float]:
    from flare_eval import __version__

    preset = options.preset
    per_case = per_case_table(records, preset)
    summary = official_summary(per_case, preset)
    write_table(per_case, out_dir / "per_case.csv")
    atomic_write_text(out_dir / "scores.txt", scores_txt(summary))
    tidy = tidy_table(records, preset)
    write_table(tidy, out_dir / "metrics_long.csv")
    if parquet:
        write_table(tidy, out_dir / "metrics_long.parquet")
    write_table(cases_table(records), out_dir / "cases.csv")
    undefined: dict[str, int] = {}
    if preset.lesion_label is not None:
        lesions = lesions_per_case_table(records)
        write_table(lesions, out_dir / "lesions_per_case.csv")
        write_table(lesion_instances_table(records), out_dir / "lesions.csv")
        # NaN marks a ratio with a zero denominator (e.g. recall without reference lesions)
        undefined = {k: int(v) for k, v in lesions.drop(columns="Name").isna().sum().items() if v}
    statuses = {s: sum(r.status == s for r in records) for s in sorted({r.status for r in records})}
    run = {
        "complete": True,
        "flare_eval_version": __version__,
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__, "nibabel": nibabel.__version__},
        "options": options.fingerprint(),
        "cases": len(records),
        "statuses": statuses,
        "failed_cases": [{"case": r.case, "status": r.status, "message": r.message}
                         for r in records if r.status != "ok"],
        "nan_values_left_out_of_means": int(per_case.drop(columns="Name").isna().sum().sum()),
        "lesion_values_undefined": undefined,
        "extra_predictions_ignored": extra,
        "reused_from_cache": reused,
        "elapsed_s": round(elapsed_s, 3),
        "summary": summary,
    }
    atomic_write_text(out_dir / "run.json", json.dumps(run, indent=1, allow_nan=True))
    return summary


def clear_cache(out_dir: Path) -> None:
    """Forget earlier scores in ``out_dir`` (``--overwrite``)."""
    cache = Path(out_dir) / CACHE_DIR
    if cache.is_dir():
        for path in sorted(cache.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        cache.rmdir()
    os.makedirs(out_dir, exist_ok=True)
