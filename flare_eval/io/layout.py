"""File and folder names flare-eval reads back: case ids, and the results folder's team folders.

A results folder holds one folder per team (``RESULTS/<team>/``, ``flare-eval score`` outputs:
``per_case.csv``...; optionally the ``flare-eval run`` outputs: ``runs.csv``...) and the
rankings in ``RESULTS/ranking/``.  Both the ranking table and the report read it through
:func:`team_folders`.
"""

from __future__ import annotations

from pathlib import Path

from flare_eval.errors import InputError
from flare_eval.typing import StrPath

__all__ = ["CHANNEL_SUFFIX", "LABEL_EXTENSIONS", "PER_CASE_CSV", "RANKING_FOLDER", "RUNS_CSV", "case_id",
           "is_volume_file", "team_folders"]

#: The channel suffix of FLARE input images: ``<id>_0000.nii.gz``.
CHANNEL_SUFFIX = "_0000"
#: Endings of the volume files read as labels, predictions and images (``.nii.gz`` before
#: ``.nii``: the longest first, for :func:`case_id`).
LABEL_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".mha", ".nrrd")
#: Per-case scores of a team, the table that makes a folder a team folder.
PER_CASE_CSV = "per_case.csv"
#: Per-case runs (time, GPU memory) of a team.
RUNS_CSV = "runs.csv"
#: The rankings inside a results folder.
RANKING_FOLDER = "ranking"


def case_id(name: StrPath, *, image: bool = False) -> str:
    """The case id of a file name.

    Parameters
    ----------
    name
        A label file name ``<id>.nii.gz`` (the scorer's ``Name``; or ``.nii``, ``.mha``,
        ``.nrrd``), or with ``image=True`` an input image name ``<id>_0000.nii.gz`` (the
        runner's ``Name``); a folder part is ignored.
    image
        Also strip the ``_0000`` channel suffix.  Not guessed from the name: an id may itself
        end in ``_0000``.

    Examples
    --------
    >>> case_id("FLARE23Ts_0001.nii.gz"), case_id("FLARE23Ts_0001_0000.nii.gz", image=True)
    ('FLARE23Ts_0001', 'FLARE23Ts_0001')
    >>> case_id(Path("labels/FLARE23Ts_0001_0000.nii")), case_id("FLARE23Ts_0001.mha")
    ('FLARE23Ts_0001_0000', 'FLARE23Ts_0001')
    """
    name = str(name).strip().replace("\\", "/").rsplit("/", 1)[-1]
    for extension in LABEL_EXTENSIONS:
        if name.endswith(extension):
            name = name[: -len(extension)]
            break
    if image and name.endswith(CHANNEL_SUFFIX):
        name = name[: -len(CHANNEL_SUFFIX)]
    return name


def is_volume_file(name: StrPath) -> bool:
    """Whether a file name ends in one of :data:`LABEL_EXTENSIONS`."""
    return str(name).endswith(LABEL_EXTENSIONS)


def team_folders(results: StrPath) -> list[Path]:
    """The team folders of a results folder, sorted by name.

    A team folder is a sub-folder holding a ``per_case.csv``; hidden folders (``.staging``...)
    and the ranking folder are not teams.

    Raises
    ------
    InputError
        A folder with ``runs.csv`` but no ``per_case.csv``: a team that was run but not scored
        would otherwise drop out of the ranking unnoticed.
    """
    teams = []
    for folder in sorted(p for p in Path(results).iterdir() if p.is_dir()):
        if folder.name.startswith(".") or folder.name == RANKING_FOLDER:
            continue
        if (folder / PER_CASE_CSV).is_file():
            teams.append(folder)
        elif (folder / RUNS_CSV).is_file():
            raise InputError(f"team folder {folder} has {RUNS_CSV} but no {PER_CASE_CSV}",
                             hint=f"score the team's predictions: flare-eval score --out {folder} ...")
    return teams
