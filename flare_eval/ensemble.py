"""Voxel-wise majority-vote ensembles of several submissions, as in the FLARE23 paper.

The paper combined the top-3 and top-5 teams by majority vote per voxel. :func:`majority_vote`
does it for arrays, :func:`ensemble_folders` for folders of ``<id>.nii.gz`` predictions paired
by file name; ``flare-eval ensemble`` is the command-line front end.

Tie rule: the label with the most votes wins; among labels with equally many votes the lowest
label id wins. Background is 0, the lowest id, so a tie that involves background always goes
to background (an ensemble does not add a structure that half of its members reject).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from flare_eval.errors import ConfigError, InputError
from flare_eval.presets import FLARE23
from flare_eval.typing import LabelArray, StrPath

__all__ = ["majority_vote", "ensemble_folders"]

#: Largest distance (mm) between two affines' entries still taken as the same grid; headers
#: store float32, so the same geometry written by two tools can differ in the last digits.
_AFFINE_ATOL_MM = 1e-4


def _check_values(values: NDArray[np.uint8], allowed: NDArray[np.bool_], what: str) -> None:
    if values.size == 0 or allowed[values.min():int(values.max()) + 1].all():
        return  # the usual case, two SIMD reductions; a full histogram costs 25x more
    outside = ~allowed[values]
    if outside.any():
        bad = np.unique(values[outside]).tolist()
        raise InputError(
            f"majority_vote: {what} holds labels {bad[:10]} outside the allowed labels "
            f"0 and {(np.flatnonzero(allowed[1:]) + 1).tolist()}",
            hint="pass every class id of the label map in labels",
        )


def majority_vote(predictions: Sequence[LabelArray], *, labels: Sequence[int]) -> NDArray[np.uint8]:
    """Voxel-wise majority vote of label volumes.

    Parameters
    ----------
    predictions
        Two or more label volumes of the same shape, integer class ids. Not modified.
    labels
        The foreground class ids of the label map (1..255); background 0 is always allowed.
        Any other value in a prediction is an error.

    Returns
    -------
    numpy.ndarray
        uint8 labels, the shape of the inputs: at each voxel the label given by the most
        members; ties go to the lowest label id among the tied (background, 0, when it is one
        of them).

    Raises
    ------
    InputError
        Fewer than two predictions, different shapes, non-integer arrays, or values outside
        0 and ``labels``.
    ConfigError
        ``labels`` outside 1..255.

    Notes
    -----
    With members p_1..p_n, the result at voxel v is min(argmax_l #{k : p_k(v) = l}). Only
    voxels where the members disagree are voted on; elsewhere the common label is copied,
    so the cost grows with the disputed volume, not the whole one.

    Examples
    --------
    >>> a = np.array([[[0, 1, 2, 2]]]); b = np.array([[[1, 1, 3, 0]]]); c = np.array([[[2, 0, 3, 1]]])
    >>> majority_vote([a, b, c], labels=[1, 2, 3]).tolist()  # 3-way tie -> 0; 1; 3; 3-way tie -> 0
    [[[0, 1, 3, 0]]]
    >>> majority_vote([a, b], labels=[1, 2, 3]).tolist()  # two members: any split is a tie
    [[[0, 1, 2, 0]]]
    """
    if len(predictions) < 2:
        raise InputError(f"majority_vote: needs at least 2 predictions, got {len(predictions)}")
    label_ids = [int(v) for v in labels]
    if any(not 0 < v < 256 for v in label_ids):
        raise ConfigError(f"majority_vote: labels must lie in 1..255, got {label_ids}")
    allowed = np.zeros(256, dtype=bool)
    allowed[[0, *label_ids]] = True
    arrays = [np.asarray(p) for p in predictions]
    first = arrays[0]
    for index, array in enumerate(arrays):
        if array.dtype.kind not in "iub":
            raise InputError(f"majority_vote: prediction {index} has data type {array.dtype}, "
                             "expected integer labels")
        if array.shape != first.shape:
            raise InputError(f"majority_vote: prediction {index} has shape {array.shape}, "
                             f"prediction 0 has {first.shape}")
        if array.size and (array.min() < 0 or array.max() > 255):
            raise InputError(f"majority_vote: prediction {index} holds values "
                             f"{array.min()}..{array.max()}, expected labels 0..255")
    result = first.astype(np.uint8)  # a copy: the caller's array is never written
    _check_values(result, allowed, "prediction 0")
    disagree = np.zeros(first.shape, dtype=bool)
    for array in arrays[1:]:
        disagree |= array != first
    if not disagree.any():
        return result
    # Every voxel of every member is either equal to prediction 0 (checked above) or among
    # these disputed values, so checking them covers all inputs.
    votes = np.stack([array[disagree].astype(np.uint8) for array in arrays])
    _check_values(votes, allowed, "a prediction")
    # Score each member's vote by how many members share it, the lower label first on equal
    # scores; n^2 comparisons, whatever the number of labels.
    support = np.stack([(votes == vote).sum(axis=0, dtype=np.int32) for vote in votes])
    best = np.argmax(support * 256 + (255 - votes.astype(np.int32)), axis=0)
    best_label = votes[best, np.arange(votes.shape[1])]
    result[disagree] = best_label
    return result


def _case_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"ensemble: prediction folder {folder} does not exist or is not a folder")
    files = {p.name: p for p in sorted(folder.glob("*.nii.gz")) if p.is_file()}
    if not files:
        raise InputError(f"ensemble: prediction folder {folder} holds no <id>.nii.gz file")
    return files


def ensemble_folders(
    pred_dirs: Sequence[StrPath],
    out_dir: StrPath,
    *,
    labels: Sequence[int] = FLARE23.labels,
    allow_missing: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[Path]:
    """Majority-vote ensemble of folders of predictions, case by case.

    Parameters
    ----------
    pred_dirs
        Two or more folders of ``<id>.nii.gz`` label files; files are paired by name.
    out_dir
        Folder for the ensemble's ``<id>.nii.gz`` files (created; must not be an input).
    labels
        Foreground class ids (default: the FLARE23 labels 1..14). Values above the largest
        are read as background with a warning (:func:`flare_eval.io.read_label`); other
        values outside the map are an error.
    allow_missing
        False: a case missing from some folder is an error that lists them. True: a missing
        prediction votes background everywhere (how scoring treats a failed case), and a
        case is written whenever at least one folder has it.
    progress
        Called as ``progress(done, total, name)`` after each case.

    Returns
    -------
    list of pathlib.Path
        The written files, in case-name order.

    Raises
    ------
    InputError
        A folder missing or empty, a case missing (unless ``allow_missing``), files of one
        case with different shapes or affines, or a file unreadable or with bad labels.
    ConfigError
        Fewer than two folders, or ``out_dir`` is one of them.

    Notes
    -----
    Each output keeps the affine of the first folder's file (they must agree within 1e-4 mm);
    the vote and its tie rule are those of :func:`majority_vote`.
    """
    from flare_eval.io import read_label, write_label

    folders = [Path(d) for d in pred_dirs]
    out = Path(out_dir)
    if len(folders) < 2:
        raise ConfigError(f"ensemble: needs at least 2 prediction folders, got {len(folders)}")
    if any(out.resolve() == f.resolve() for f in folders):
        raise ConfigError(f"ensemble: output folder {out} is one of the prediction folders",
                          hint="write the ensemble to a new folder")
    files = [_case_files(f) for f in folders]
    names = sorted(set().union(*files))
    missing = {f: [n for n in names if n not in fs] for f, fs in zip(folders, files)}
    if not allow_missing and any(missing.values()):
        detail = "; ".join(f"{f}: {len(m)} missing, e.g. {m[:3]}" for f, m in missing.items() if m)
        raise InputError(f"ensemble: not every folder has every case ({detail})",
                         hint="allow_missing (--allow-missing) lets a missing case vote background")
    max_label = max(labels)
    written: list[Path] = []
    for done, name in enumerate(names, start=1):
        volumes = [read_label(fs[name], max_label=max_label) for fs in files if name in fs]
        reference = volumes[0]
        for volume in volumes[1:]:
            if volume.data.shape != reference.data.shape:
                raise InputError(f"ensemble: {volume.path} has shape {volume.data.shape}, "
                                 f"{reference.path} has {reference.data.shape}")
            if not np.allclose(volume.affine, reference.affine, rtol=0, atol=_AFFINE_ATOL_MM):
                raise InputError(
                    f"ensemble: {volume.path} and {reference.path} have different affines "
                    f"({volume.affine.tolist()} vs {reference.affine.tolist()})",
                    hint="members of an ensemble must share the voxel grid of the case")
        members = [v.data for v in volumes]
        members += [np.zeros_like(reference.data)] * (len(folders) - len(volumes))
        path = out / name
        write_label(path, majority_vote(members, labels=labels), affine=reference.affine)
        written.append(path)
        if progress is not None:
            progress(done, len(names), name)
    return written
