"""Challenge presets: the label map, NSD tolerances and every rule of a scoring protocol, as data.

A :class:`Preset` is a frozen dataclass, the in-memory form of a challenge definition file
(TOML, :mod:`flare_eval.definition`): the shipped presets are the files
``flare_eval/challenges/*.toml``, their one source, and ``--preset`` takes a name or a user's
file.  ``flare23`` reproduces the official FLARE 2023 scorer as it ran during the challenge
(2023-07 to 2024-03), ``flare23-2024`` its March-2024 rule (NSD = 0 when DSC < 0.2),
``flare22`` the FLARE 2022 scorer (13 organs, no NSD skip), ``flare24-task1`` (pan-cancer
lesions), ``flare24-task2`` and ``flare24-task3`` (13 organs in CT and in MRI) the FLARE 2024
scorers.  Every item can be overridden with
:meth:`Preset.with_overrides` (the CLI's ``--nsd-dsc-threshold 0.2``) and every output records
the preset it was made with and its :attr:`Preset.content_sha256`.

References
----------
Ma et al., "Unleashing the strengths of unlabelled data in deep learning-assisted pan-cancer
abdominal organ quantification: the FLARE23 challenge", Lancet Digital Health / arXiv 2024;
organizers' code: github.com/JunMa11/FLARE, folder FLARE23.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from flare_eval.errors import ConfigError

__all__ = [
    "ClassInfo",
    "LesionRules",
    "RankingMetric",
    "Preset",
    "FLARE23",
    "PRESETS",
    "get_preset",
    "PHANTOM_SHAPE",
    "PHANTOM_SPACING_MM",
    "PHANTOM_QUALITY_PROFILES",
    "SLOT_TOLERANCE",
]


@dataclass(frozen=True)
class ClassInfo:
    """One class of the label map.

    Attributes
    ----------
    label
        Voxel value in label files.
    name
        Column name used in the official tables (``Liver``, ``RK``...).
    description
        Plain-language name.
    tolerance_mm
        NSD tolerance in millimetres.
    group
        Organ group of the challenge paper's analysis (``large``, ``small``, ``tubular``) or
        ``lesion``.
    """

    label: int
    name: str
    description: str
    tolerance_mm: float
    group: Literal["large", "small", "tubular", "lesion"]


@dataclass(frozen=True)
class LesionRules:
    """How the lesion class is cut into instances and matched, for the instance metrics
    (:func:`flare_eval.metrics.lesions.lesion_metrics`, which documents each item).

    Attributes
    ----------
    connectivity
        Voxel neighbourhood joining voxels into one lesion: 6, 18 or 26.
    iou_threshold
        With ``match="iou"``, a pair can match only when IoU > this, in [0, 1).
    match
        ``"iou"`` (pairs above the threshold) or ``"overlap"`` (any shared voxel).
    """

    connectivity: int
    iou_threshold: float
    match: Literal["iou", "overlap"]


@dataclass(frozen=True)
class RankingMetric:
    """A per-case criterion of the ranking (:mod:`flare_eval.ranking.schemes`).

    Attributes
    ----------
    name
        The criterion (``organ_dsc``, ``runtime``...; :data:`flare_eval.definition.RANKING_METRIC_NAMES`).
    higher_is_better
        Its direction.
    weight
        Its weight (> 0) in the team's score: each of its ranks counts ``weight`` times in the
        ``flare`` mean of ranks, its per-metric rank ``weight`` times in the other schemes.
    aggregate
        ``"mean"`` or ``"median"`` of its cases: of the case ranks (``rank-then-aggregate``) or
        of the values (``aggregate-then-rank``); ``"mean"`` under the other schemes.
    floor
        The best value counted: better values count as this (they tie).  The ``runtime``
        criterion of a :class:`Preset` always gets the preset's ``runtime_tolerance_s`` here
        (one place).
    cap
        The worst value counted: worse values count as this (they tie).
    """

    name: str
    higher_is_better: bool
    weight: float
    aggregate: Literal["mean", "median"]
    floor: float | None = None
    cap: float | None = None




@dataclass(frozen=True)
class Preset:
    """Every rule of a challenge's scoring, timing and ranking protocol.

    Attributes
    ----------
    name
        Preset name, recorded in every output.
    title
        One line on what the preset reproduces (``flare-eval presets`` lists it).
    classes
        The label map, in the order of the official output columns.
    lesion_label
        Label of the lesion class (scored semantically and as instances), or ``None``.
    lesions
        How that class is cut into instances and matched; ``None`` exactly when
        ``lesion_label`` is.
    z_crop_labels
        Tubular classes whose masks are both cut to the reference's extent along axis 2 as
        the half-open slice ``[zmin, zmax)`` (the official code drops the topmost slice).
    single_slice_z_crop
        What a z-cropped class whose reference lies on one slice gets (the official code
        crashes there): ``"keep"`` scores that single slice uncropped (``[zmin, zmin + 1)``);
        ``"nan"`` reports NaN for that class of that case, whatever the prediction (an empty
        one too), so every team is left the same classes.
    nsd_dsc_threshold
        NSD is 0 when DSC is strictly below this (0.1 during FLARE23, 0.2 from March 2024).
    decimals
        Per-case values and means are rounded with ``np.round`` to this many places.
    both_empty_value, one_empty_value
        DSC and NSD when reference and prediction are both empty, or exactly one is.
    missing_prediction
        ``"fail"`` scores a missing prediction as a failed case (0 for every class present in
        the reference, 1 where both are empty as for an empty prediction), ``"error"`` aborts.
    out_of_map_labels
        What a prediction holding a value outside the label map (above the largest label, or
        negative) gets: ``"background"`` scores those voxels as background with a warning (the
        FLARE22/23 scorers ignore such values); ``"zero_case"`` gives every class of the case
        DSC = NSD = 0 (HD95 ``inf``), before any other rule (FLARE24 task 1's scorer zeroes a
        case whose prediction has a value above 1).
    runtime_tolerance_s, gpu_tolerance_mib
        Efficiency tolerances: runtimes under the first tie; GPU memory under the second is
        free in the tolerance-adjusted AUC ``sum(max(0, m - tol) * dt)``.
    failed_runtime_s, failed_gpu_auc_mibs
        Penalties of a case whose container failed (timeout, crash, no output): the runtime and
        GPU AUC it is ranked with.  FLARE22 used 3600 s and a full 16 GB GPU for 3600 s.
    ranking_metrics
        The per-case criteria, their directions, weights, aggregates, floors and caps.
    tie_method
        How ties share ranks (``"min"``, as challengeR).
    ranking_scheme
        How the criteria make a ranking: ``"flare"`` (the mean of every case x metric rank,
        FLARE 2023) or one of challengeR's per-metric schemes (``rank-then-aggregate``,
        ``aggregate-then-rank``, ``test-then-rank``).
    """

    name: str
    title: str
    classes: tuple[ClassInfo, ...]
    lesion_label: int | None
    lesions: LesionRules | None
    z_crop_labels: tuple[int, ...]
    single_slice_z_crop: Literal["keep", "nan"]
    nsd_dsc_threshold: float
    decimals: int
    both_empty_value: float
    one_empty_value: float
    missing_prediction: Literal["fail", "error"]
    out_of_map_labels: Literal["background", "zero_case"]
    runtime_tolerance_s: float
    gpu_tolerance_mib: float
    failed_runtime_s: float
    failed_gpu_auc_mibs: float
    # the runtime criterion's floor is set from runtime_tolerance_s in __post_init__
    ranking_metrics: tuple[RankingMetric, ...]
    tie_method: Literal["min", "average", "max", "dense", "first"]
    ranking_scheme: Literal["flare", "rank-then-aggregate", "aggregate-then-rank", "test-then-rank"]

    def __post_init__(self) -> None:
        # The runtime floor is runtime_tolerance_s, defined once: overriding the tolerance
        # (``--runtime-tolerance 0`` removes it) moves the ranking and the report's line alike.
        floor = self.runtime_tolerance_s if self.runtime_tolerance_s > 0 else None
        object.__setattr__(self, "ranking_metrics", tuple(
            dataclasses.replace(m, floor=floor) if m.name == "runtime" else m
            for m in self.ranking_metrics
        ))
        if self.runtime_tolerance_s < 0 or self.gpu_tolerance_mib < 0:
            raise ConfigError(
                f"preset {self.name!r}: runtime_tolerance_s and gpu_tolerance_mib must be >= 0, "
                f"got {self.runtime_tolerance_s} and {self.gpu_tolerance_mib}"
            )
        labels = [c.label for c in self.classes]
        if len(set(labels)) != len(labels) or any(not 0 < v < 256 for v in labels):
            raise ConfigError(
                f"preset {self.name!r}: class labels must be unique and in 1..255, got {labels}"
            )
        for z in self.z_crop_labels:
            if z not in labels:
                raise ConfigError(f"preset {self.name!r}: z-crop label {z} is not in the map")
        if self.lesion_label is not None and self.lesion_label not in labels:
            raise ConfigError(f"preset {self.name!r}: lesion label {self.lesion_label} is not in the map")
        if (self.lesion_label is None) != (self.lesions is None):
            raise ConfigError(f"preset {self.name!r}: lesion rules without a lesion label, or a "
                              "lesion label without lesion rules (give both or neither)")
        if not 0.0 <= self.nsd_dsc_threshold <= 1.0:
            raise ConfigError(
                f"nsd_dsc_threshold must lie in [0, 1], got {self.nsd_dsc_threshold}"
            )
        if self.single_slice_z_crop not in ("keep", "nan"):
            raise ConfigError(
                f"single_slice_z_crop must be 'keep' or 'nan', got {self.single_slice_z_crop!r}"
            )
        if self.missing_prediction not in ("fail", "error"):
            raise ConfigError(
                f"missing_prediction must be 'fail' or 'error', got {self.missing_prediction!r}"
            )
        from flare_eval.definition import OUT_OF_MAP_POLICIES  # a cycle at import time

        if self.out_of_map_labels not in OUT_OF_MAP_POLICIES:
            raise ConfigError(f"out_of_map_labels must be one of {list(OUT_OF_MAP_POLICIES)}, "
                              f"got {self.out_of_map_labels!r}")

    @property
    def labels(self) -> tuple[int, ...]:
        """Label values of all classes, in column order."""
        return tuple(c.label for c in self.classes)

    @property
    def organ_labels(self) -> tuple[int, ...]:
        """Labels averaged into Organ_DSC / Organ_NSD (every class but the lesion)."""
        return tuple(c.label for c in self.classes if c.label != self.lesion_label)

    @property
    def max_label(self) -> int:
        return max(self.labels)

    def class_info(self, label: int) -> ClassInfo:
        """The :class:`ClassInfo` of ``label``; raises ``ConfigError`` for an unknown one."""
        for c in self.classes:
            if c.label == label:
                return c
        raise ConfigError(f"label {label} is not in preset {self.name!r} (labels {self.labels})")

    def with_overrides(self, **overrides: Any) -> Preset:
        """A copy with the given items replaced (``None`` is a value: ``lesion_label=None``).

        Examples
        --------
        >>> FLARE23.with_overrides(nsd_dsc_threshold=0.2).nsd_dsc_threshold
        0.2
        >>> FLARE23.with_overrides(lesion_label=None, lesions=None).lesion_label is None
        True
        """
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown preset item(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **overrides) if overrides else self

    @functools.cached_property
    def content_sha256(self) -> str:
        """SHA-256 of the definition's content (canonical JSON of every item): equal for equal
        rules whatever the file's layout, comments or name on disk.  Computed once per preset
        (it is frozen): every output records it, a scoring run several times."""
        canonical = json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        """The preset as plain data with its ``content_sha256``, for recording next to every
        output; :func:`flare_eval.definition.preset_from_mapping` reads it back."""
        return {**dataclasses.asdict(self), "content_sha256": self.content_sha256}


# Below the classes: flare_eval.definition builds them (and imports them from here lazily).
from flare_eval.definition import builtin_names, load_definition  # noqa: E402

#: The shipped presets by name, each read from its file in flare_eval/challenges/.
PRESETS: dict[str, Preset] = {name: load_definition(name) for name in builtin_names()}
FLARE23 = PRESETS["flare23"]

#: Most relative difference between the calibrated times of two slots (slowest / fastest - 1,
#: per workload and mode) before ``evaluate --slots --calibration`` refuses: 10 %, a fifth of
#: the gap between two adjacent GPU generations, and above the run-to-run noise of the
#: reference loop on an idle dedicated host (a few percent).
SLOT_TOLERANCE: float = 0.10


def get_preset(name: str) -> Preset:
    """A shipped preset by name (``flare23``), or the preset of a ``.toml`` definition file.

    Raises
    ------
    ConfigError
        For an unknown name (the message lists the shipped ones) or a definition's mistakes.
    """
    return PRESETS[name] if name in PRESETS else load_definition(name)


#: Grid of the built-in phantoms (voxels) and its voxel size (mm), see :mod:`flare_eval.phantoms`.
PHANTOM_SHAPE: tuple[int, int, int] = (128, 128, 80)
PHANTOM_SPACING_MM: tuple[float, float, float] = (3.2, 3.2, 4.0)

#: Per-organ error rates of simulated teams: boundary error (voxels, std), probability of missing a
#: small organ, probability of missing a lesion, expected false-positive lesions per case.
PHANTOM_QUALITY_PROFILES: dict[str, dict[str, float]] = {
    "excellent": {"boundary": 0.3, "miss_small": 0.0, "miss_lesion": 0.1, "fp_lesions": 0.1},
    "good": {"boundary": 0.7, "miss_small": 0.05, "miss_lesion": 0.25, "fp_lesions": 0.3},
    "fair": {"boundary": 1.2, "miss_small": 0.15, "miss_lesion": 0.45, "fp_lesions": 0.7},
    "poor": {"boundary": 2.0, "miss_small": 0.35, "miss_lesion": 0.7, "fp_lesions": 1.5},
}
