"""Training data: an nnU-Net-style folder, per-case annotated classes, preprocessing and patches.

A dataset folder holds ``imagesTr/<id>_0000.nii.gz`` and ``labelsTr/<id>.nii.gz`` (``images/``
and ``labels/``, the layout ``flare-eval phantoms`` writes, are accepted too).  Which classes a
case annotates comes from JSON files mapping case ids to class lists, e.g.
``{"case_0001": [1, 2, 3, 13]}``: ``<folder>/annotated_classes.json`` when present, plus any
given with ``--annotations``.  A case listed nowhere is fully annotated (classes 1..14).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from cascade_model.plans import LESION_LABEL, NUM_CLASSES, IntensityPlan
from cascade_model.volume import read_canonical, resample_image, resample_label, target_shape

__all__ = [
    "CaseRecord",
    "PreparedCase",
    "find_cases",
    "intensity_plan",
    "prepare_case",
    "PatchSampler",
]

ALL_CLASSES = tuple(range(1, NUM_CLASSES))


@dataclass(frozen=True)
class CaseRecord:
    """One training case on disk and the classes it annotates (background excluded)."""

    case_id: str
    image_path: Path
    label_path: Path
    annotated: tuple[int, ...]
    dataset: int


@dataclass(frozen=True)
class PreparedCase:
    """A case on a stage's grid, canonical RAS order.

    Attributes
    ----------
    image
        Normalised intensities (float32).
    label
        uint8 labels; for the ROI stage 0/1 ("any organ").
    annotated
        Boolean over all output channels of the stage.
    region
        Box ``((start, stop),) * 3`` patch centres are drawn from: the labelled region plus the
        ROI margins, what stage 2 sees at inference.
    class_voxels
        For each label present, up to 4096 voxel coordinates (N, 3): centres of
        foreground-oversampled patches.
    dataset
        Index of the dataset folder the case came from (for balanced sampling).
    """

    image: NDArray[np.float32]
    label: NDArray[np.uint8]
    annotated: NDArray[np.bool_]
    region: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    class_voxels: dict[int, NDArray[np.intp]]
    dataset: int


def _subfolder(root: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"{root}: none of the folders {', '.join(names)} exists")


def find_cases(dataset_dirs: list[Path], annotation_files: list[Path]) -> list[CaseRecord]:
    """List the cases of several dataset folders with their annotated classes.

    Raises
    ------
    FileNotFoundError
        When a folder lacks images or a label is missing for an image.
    ValueError
        When an annotation file names a class outside 1..14.
    """
    annotations: dict[str, list[int]] = {}
    files = [d / "annotated_classes.json" for d in dataset_dirs if (d / "annotated_classes.json").is_file()]
    for path in files + list(annotation_files):
        for case_id, classes in json.loads(Path(path).read_text()).items():
            bad = [c for c in classes if c not in ALL_CLASSES]
            if bad:
                raise ValueError(f"{path}: case {case_id} lists classes {bad} outside 1..14")
            annotations[case_id] = sorted(int(c) for c in classes)
    records = []
    for index, root in enumerate(dataset_dirs):
        images = _subfolder(root, ("imagesTr", "images"))
        labels = _subfolder(root, ("labelsTr", "labels"))
        found = sorted(images.glob("*_0000.nii.gz"))
        if not found:
            raise FileNotFoundError(f"{images}: no <id>_0000.nii.gz images")
        for image_path in found:
            case_id = image_path.name[: -len("_0000.nii.gz")]
            label_path = labels / f"{case_id}.nii.gz"
            if not label_path.is_file():
                raise FileNotFoundError(f"{label_path}: label of {image_path.name} is missing")
            records.append(CaseRecord(case_id, image_path, label_path,
                                      tuple(annotations.get(case_id, ALL_CLASSES)), index))
    return records


def intensity_plan(records: list[CaseRecord], *, seed: int = 0, per_case: int = 100_000) -> IntensityPlan:
    """nnU-Net's CT normalisation from up to ``per_case`` foreground voxels of each case."""
    rng = np.random.default_rng(seed)
    samples = []
    for record in records:
        image = np.asarray(read_canonical(record.image_path).data)
        label = np.asarray(read_canonical(record.label_path).data)
        values = image[label > 0]
        samples.append(rng.choice(values, size=min(per_case, values.size), replace=False))
    values = np.concatenate(samples)
    low, high = np.percentile(values, [0.5, 99.5])
    clipped = np.clip(values, low, high)
    return IntensityPlan(float(low), float(high), float(clipped.mean()), float(clipped.std()))


def prepare_case(
    record: CaseRecord,
    intensity: IntensityPlan,
    spacing_mm: tuple[float, float, float],
    margin_mm: tuple[tuple[float, float], ...],
    *,
    binary: bool,
) -> PreparedCase:
    """Read, reorient, normalise and resample one case to a stage's grid.

    ``binary`` makes the ROI stage's target: 1 wherever any class is labelled.
    """
    image_volume = read_canonical(record.image_path)
    label_volume = read_canonical(record.label_path)
    if image_volume.data.shape != label_volume.data.shape:
        raise ValueError(f"{record.case_id}: image {image_volume.data.shape} and label "
                         f"{label_volume.data.shape} shapes differ")
    shape = target_shape(image_volume.data.shape, image_volume.spacing_mm, spacing_mm)
    image = torch.from_numpy(image_volume.data).clamp(intensity.clip_low, intensity.clip_high)
    image = resample_image((image - intensity.mean) / intensity.std, shape).numpy()
    label = resample_label(np.rint(label_volume.data).astype(np.uint8), shape)
    if binary:
        label = (label > 0).astype(np.uint8)
        annotated = np.ones(2, dtype=bool)
    else:
        annotated = np.zeros(NUM_CLASSES, dtype=bool)
        annotated[[0, *record.annotated]] = True
        label = np.where(annotated[label], label, 0).astype(np.uint8)
    where = np.argwhere(label > 0)
    if where.size:
        region = tuple(
            (max(0, int(where[:, a].min() - low / spacing_mm[a])),
             min(shape[a], int(where[:, a].max() + 1 + high / spacing_mm[a])))
            for a, (low, high) in enumerate(margin_mm)
        )
    else:
        region = tuple((0, n) for n in shape)
    rng = np.random.default_rng(0)
    class_voxels = {}
    for lab in np.unique(label[label > 0]):
        coords = np.argwhere(label == lab)
        class_voxels[int(lab)] = coords[rng.choice(len(coords), size=min(4096, len(coords)), replace=False)]
    return PreparedCase(image.astype(np.float32), label, annotated, region, class_voxels, record.dataset)  # type: ignore[arg-type]


class PatchSampler:
    """Random training patches with foreground and lesion oversampling.

    Parameters
    ----------
    cases
        Prepared cases of one stage.
    patch_size
        Voxels (x, y, z).
    seed
        Seed of the sampler's generator.
    foreground_fraction
        Share of patches centred on a labelled voxel (nnU-Net: one third); the rest are centred
        anywhere in the case's region.
    lesion_fraction
        Of the foreground-centred patches of a case with lesions, the share centred on a lesion;
        the others pick one of the present classes uniformly, so small organs are seen often.
    dataset_weights
        Relative probability of drawing from each dataset folder (cases uniform within one);
        default: equal.
    """

    def __init__(
        self,
        cases: list[PreparedCase],
        patch_size: tuple[int, int, int],
        *,
        seed: int,
        foreground_fraction: float = 0.5,
        lesion_fraction: float = 0.5,
        dataset_weights: list[float] | None = None,
    ) -> None:
        self.cases = cases
        self.patch_size = patch_size
        self.rng = np.random.default_rng(seed)
        self.foreground_fraction = foreground_fraction
        self.lesion_fraction = lesion_fraction
        datasets = np.array([c.dataset for c in cases])
        weights = np.ones(datasets.max() + 1) if dataset_weights is None else np.asarray(dataset_weights, float)
        if len(weights) <= datasets.max():
            raise ValueError(f"{len(weights)} dataset weights for {datasets.max() + 1} dataset folders")
        per_case = weights[datasets] / np.bincount(datasets)[datasets]
        self.case_probabilities = per_case / per_case.sum()

    def _centre(self, case: PreparedCase) -> NDArray[np.intp]:
        if case.class_voxels and self.rng.random() < self.foreground_fraction:
            classes = sorted(case.class_voxels)
            if LESION_LABEL in classes and self.rng.random() < self.lesion_fraction:
                lab = LESION_LABEL
            else:
                lab = classes[int(self.rng.integers(len(classes)))]
            coords = case.class_voxels[lab]
            return coords[int(self.rng.integers(len(coords)))]
        return np.array([self.rng.integers(lo, hi) for lo, hi in case.region])

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A batch: images (B, 1, X, Y, Z) float32, labels (B, X, Y, Z) int64, annotated (B, C)."""
        images, labels, annotated = [], [], []
        for index in self.rng.choice(len(self.cases), size=batch_size, p=self.case_probabilities):
            case = self.cases[index]
            centre = self._centre(case)
            image = np.full(self.patch_size, case.image.min(), dtype=np.float32)
            label = np.zeros(self.patch_size, dtype=np.uint8)
            source, target = [], []
            for c, p, n in zip(centre, self.patch_size, case.image.shape):
                start = int(c) - p // 2 + int(self.rng.integers(-p // 4, p // 4 + 1))
                lo, hi = max(start, 0), min(start + p, n)
                source.append(slice(lo, hi))
                target.append(slice(lo - start, hi - start))
            image[tuple(target)] = case.image[tuple(source)]
            label[tuple(target)] = case.label[tuple(source)]
            # intensity augmentation: scanners and contrast phases shift and scale HU
            image = image * self.rng.uniform(0.9, 1.1) + self.rng.uniform(-0.1, 0.1)
            images.append(image)
            labels.append(label)
            annotated.append(case.annotated)
        return (torch.from_numpy(np.stack(images))[:, None], torch.from_numpy(np.stack(labels)).long(),
                torch.from_numpy(np.stack(annotated)))
