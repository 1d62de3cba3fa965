"""Preprocessing and network parameters, stored as ``plans.json`` next to the weights.

Everything inference needs besides the state dicts lives here, so a weights folder is
self-describing: intensity clipping and normalisation, each stage's grid, network widths and
patch size, and the ROI margins.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["IntensityPlan", "StagePlan", "Plans", "NUM_CLASSES", "ORGAN_LABELS", "LESION_LABEL"]

#: Background, 13 FLARE23 organs (1..13) and one lesion label (14).
NUM_CLASSES = 15
ORGAN_LABELS = tuple(range(1, 14))
LESION_LABEL = 14


@dataclass(frozen=True)
class IntensityPlan:
    """CT normalisation: clip to ``[clip_low, clip_high]`` HU, then ``(v - mean) / std``.

    nnU-Net's CT scheme: the clip bounds are the 0.5 and 99.5 percentiles of foreground voxels
    of the training set, mean and std those of the clipped foreground.
    """

    clip_low: float
    clip_high: float
    mean: float
    std: float


@dataclass(frozen=True)
class StagePlan:
    """One network of the cascade.

    Attributes
    ----------
    spacing_mm
        Grid the network runs on, in canonical RAS axis order (x, y, z).
    patch_size
        Training patch and sliding-window size in voxels (x, y, z).
    features
        U-Net channels per level, finest first.
    num_classes
        Output channels: 2 for the ROI stage, 15 for the organ stage.
    weights
        State-dict file name inside the weights folder.
    """

    spacing_mm: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    features: tuple[int, ...]
    num_classes: int
    weights: str


@dataclass(frozen=True)
class Plans:
    """The whole cascade's parameters.

    Attributes
    ----------
    intensity
        Shared by both stages.
    roi, organs
        Stage 1 (binary "any organ" on a coarse grid) and stage 2 (15 classes on the crop).
    roi_margin_mm
        Margin added to the ROI bounding box, ``((low, high),) * 3`` along RAS x, y, z (so z
        low is inferior): the coarse mask misses thin borders and stage 2 needs context.
    roi_min_component_ml
        ROI components smaller than this are false positives and do not widen the box.
    """

    intensity: IntensityPlan
    roi: StagePlan
    organs: StagePlan
    roi_margin_mm: tuple[tuple[float, float], tuple[float, float], tuple[float, float]] = (
        (10.0, 10.0), (10.0, 10.0), (20.0, 20.0),
    )
    roi_min_component_ml: float = 5.0
    notes: dict[str, str] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        """Write as indented JSON."""
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Plans:
        """Read a file written by :meth:`save`.

        Raises
        ------
        ValueError
            When the file lacks a section or a field, naming the file.
        """
        raw = json.loads(Path(path).read_text())
        try:
            return cls(
                intensity=IntensityPlan(**raw["intensity"]),
                roi=_stage(raw["roi"]),
                organs=_stage(raw["organs"]),
                roi_margin_mm=tuple(tuple(float(v) for v in pair) for pair in raw["roi_margin_mm"]),  # type: ignore[arg-type]
                roi_min_component_ml=float(raw["roi_min_component_ml"]),
                notes=dict(raw.get("notes", {})),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"plans file {path} is incomplete or malformed: {err!r}") from err


def _stage(raw: dict) -> StagePlan:
    return StagePlan(
        spacing_mm=tuple(float(v) for v in raw["spacing_mm"]),  # type: ignore[arg-type]
        patch_size=tuple(int(v) for v in raw["patch_size"]),  # type: ignore[arg-type]
        features=tuple(int(v) for v in raw["features"]),
        num_classes=int(raw["num_classes"]),
        weights=str(raw["weights"]),
    )
