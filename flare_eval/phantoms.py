"""Synthetic abdominal CT phantoms with FLARE23 labels, and simulated predictions of them.

Built-in demo data: no download, deterministic for a seed.  Each phantom is a body ellipse of
fat and muscle with a spine, the 13 FLARE organs as ellipsoids and tubes of plausible size and
position (jittered per seed), 0-3 lesions in liver, kidneys or pancreas, organ-specific HU values
and noise, on a realistic grid (an LPS-stored affine, as DICOM converters write, with
anisotropic spacing).  :func:`simulate_prediction` perturbs a label map the way segmentation
models err (boundary shifts, missed small organs, missed and false lesions), with a quality knob.

These are smoke-test data for the toolkit and its reference model, not anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from flare_eval.errors import ConfigError
# Defined beside the other defaults so that building the CLI parser needs no numpy or scipy.
from flare_eval.presets import PHANTOM_QUALITY_PROFILES as QUALITY_PROFILES
from flare_eval.presets import PHANTOM_SHAPE as DEFAULT_SHAPE
from flare_eval.presets import PHANTOM_SPACING_MM as DEFAULT_SPACING_MM
from flare_eval.typing import Spacing, StrPath

__all__ = [
    "Phantom",
    "make_phantom",
    "simulate_prediction",
    "write_phantom_set",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING_MM",
    "QUALITY_PROFILES",
]


# label: (kind, centre mm (x right->left, y posterior->anterior, z up), size mm, HU)
# ellipsoid size = semi-axes; tube size = (radius, radius, half length along z)
_ORGANS: tuple[tuple[int, str, tuple[float, float, float], tuple[float, float, float], float], ...] = (
    (1, "ellipsoid", (-60.0, 10.0, 40.0), (80.0, 70.0, 65.0), 60.0),  # liver
    (11, "ellipsoid", (50.0, 25.0, 45.0), (50.0, 35.0, 45.0), 25.0),  # stomach
    (3, "ellipsoid", (85.0, -40.0, 40.0), (40.0, 32.0, 50.0), 50.0),  # spleen
    (2, "ellipsoid", (-65.0, -55.0, -20.0), (28.0, 25.0, 50.0), 160.0),  # right kidney
    (13, "ellipsoid", (65.0, -55.0, -10.0), (28.0, 25.0, 50.0), 160.0),  # left kidney
    (4, "ellipsoid", (10.0, -10.0, 5.0), (60.0, 12.0, 15.0), 45.0),  # pancreas
    (12, "ellipsoid", (-25.0, 0.0, -15.0), (30.0, 14.0, 22.0), 35.0),  # duodenum
    (9, "ellipsoid", (-45.0, 45.0, 0.0), (18.0, 15.0, 30.0), 10.0),  # gallbladder
    (7, "ellipsoid", (-45.0, -45.0, 30.0), (9.0, 6.0, 16.0), 30.0),  # right adrenal
    (8, "ellipsoid", (45.0, -45.0, 35.0), (9.0, 6.0, 16.0), 30.0),  # left adrenal
    (5, "tube", (15.0, -32.0, 0.0), (11.0, 11.0, 110.0), 220.0),  # aorta
    (6, "tube", (-20.0, -25.0, 0.0), (10.0, 10.0, 95.0), 150.0),  # IVC
    (10, "tube", (10.0, -25.0, 105.0), (7.0, 7.0, 50.0), 40.0),  # esophagus
)
_LESION_HOSTS = (1, 1, 1, 2, 13, 4)


@dataclass(frozen=True)
class Phantom:
    """One synthetic case.

    Attributes
    ----------
    image
        CT-like intensities in HU, int16, shape (X, Y, Z).
    label
        FLARE23 labels 0..14, uint8, same shape.
    affine
        4x4 voxel-to-world matrix (LPS-stored: negative x and y steps).
    """

    image: NDArray[np.int16]
    label: NDArray[np.uint8]
    affine: NDArray[np.float64]

    @property
    def spacing_mm(self) -> Spacing:
        return tuple(float(v) for v in np.abs(np.diag(self.affine)[:3]))  # type: ignore[return-value]


def _world_grid(shape: tuple[int, int, int], spacing: Spacing) -> tuple[NDArray, NDArray, NDArray]:
    """Patient coordinates (mm) of the voxel centres along each axis, centred on the volume."""
    return tuple(  # type: ignore[return-value]
        (np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)
    )


def _shape_mask(
    kind: str,
    centre: NDArray,
    size: NDArray,
    axes: tuple[NDArray, NDArray, NDArray],
) -> NDArray[np.bool_]:
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    dx, dy, dz = (x - centre[0]) / size[0], (y - centre[1]) / size[1], (z - centre[2]) / size[2]
    if kind == "ellipsoid":
        return dx * dx + dy * dy + dz * dz <= 1.0
    return (dx * dx + dy * dy <= 1.0) & (np.abs(dz) <= 1.0)


def make_phantom(
    seed: int,
    *,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing_mm: Spacing = DEFAULT_SPACING_MM,
    max_lesions: int = 3,
) -> Phantom:
    """Make one deterministic phantom.

    Parameters
    ----------
    seed
        Everything (jitter, lesions, noise) follows from it.
    shape
        Voxels along (X, Y, Z).
    spacing_mm
        Voxel size in mm; the field of view is ``shape * spacing``.  Organ positions are in mm,
        so the anatomy is the same at any resolution.
    max_lesions
        At most this many lesions (label 14); the count is drawn from 0..max_lesions.

    Returns
    -------
    Phantom

    Examples
    --------
    >>> p = make_phantom(0, shape=(48, 48, 32), spacing_mm=(8.0, 8.0, 10.0))
    >>> p.image.dtype, p.label.shape, int(p.label.max()) <= 14
    (dtype('int16'), (48, 48, 32), True)
    """
    if len(shape) != 3 or min(shape) < 8:
        raise ConfigError(f"phantom shape must be 3 sizes of at least 8 voxels, got {shape}")
    if len(spacing_mm) != 3 or min(spacing_mm) <= 0:
        raise ConfigError(f"phantom spacing must be 3 positive numbers, got {spacing_mm}")
    rng = np.random.default_rng(seed)
    axes = _world_grid(shape, spacing_mm)
    label = np.zeros(shape, dtype=np.uint8)
    image = np.full(shape, -1000.0, dtype=np.float32)
    body = _shape_mask("tube", np.array([0.0, 0.0, 0.0]), np.array([170.0, 125.0, 1e4]), axes)
    image[body] = -90.0  # fat
    muscle = body & ~_shape_mask("tube", np.zeros(3), np.array([155.0, 112.0, 1e4]), axes)
    image[muscle] = 45.0
    spine = _shape_mask("tube", np.array([0.0, -85.0, 0.0]), np.array([20.0, 20.0, 1e4]), axes)
    image[spine] = 450.0
    scale = rng.uniform(0.9, 1.1)
    shift = rng.normal(0.0, 6.0, size=3)
    hu = {}
    for lab, kind, centre, size, value in _ORGANS:
        c = np.asarray(centre) * scale + shift + rng.normal(0.0, 3.0, size=3)
        s = np.asarray(size) * scale * rng.uniform(0.9, 1.1, size=3)
        mask = _shape_mask(kind, c, s, axes) & body
        label[mask] = lab
        image[mask] = value
        hu[lab] = value
    for _ in range(int(rng.integers(0, max_lesions + 1))):
        host = int(rng.choice(_LESION_HOSTS))
        where = np.argwhere(label == host)
        if where.size == 0:
            continue
        centre_vox = where[rng.integers(len(where))]
        centre = np.array([axes[i][centre_vox[i]] for i in range(3)])
        radius = rng.uniform(8.0, 22.0)
        mask = _shape_mask("ellipsoid", centre, np.array([radius, radius * 0.9, radius]), axes)
        mask &= label == host
        label[mask] = 14
        image[mask] = hu[host] - rng.uniform(30.0, 60.0)  # hypodense
    image = ndimage.gaussian_filter(image, sigma=0.7)
    image += rng.normal(0.0, 12.0, size=shape).astype(np.float32)
    affine = np.diag([-spacing_mm[0], -spacing_mm[1], spacing_mm[2], 1.0])
    affine[:3, 3] = [
        (shape[0] - 1) / 2.0 * spacing_mm[0],
        (shape[1] - 1) / 2.0 * spacing_mm[1],
        -(shape[2] - 1) / 2.0 * spacing_mm[2],
    ]
    return Phantom(image=np.clip(image, -1024, 3071).astype(np.int16), label=label, affine=affine)


def simulate_prediction(
    label: NDArray[np.uint8],
    seed: int,
    *,
    quality: Literal["excellent", "good", "fair", "poor"] = "good",
) -> NDArray[np.uint8]:
    """A plausible imperfect segmentation of ``label``, deterministic for ``seed``.

    Each organ is grown or shrunk by a random number of voxels and shifted by up to one voxel;
    small organs (adrenals, gallbladder) may be missed, lesions missed, and false lesions added
    inside the liver.  The amounts follow :data:`QUALITY_PROFILES`.
    """
    if quality not in QUALITY_PROFILES:
        raise ConfigError(f"quality must be one of {sorted(QUALITY_PROFILES)}, got {quality!r}")
    profile = QUALITY_PROFILES[quality]
    rng = np.random.default_rng(seed)
    out = np.zeros_like(label)
    boxes = ndimage.find_objects(label, max_label=14)
    for lab in range(1, 15):
        box = boxes[lab - 1]
        if box is None:
            continue
        if lab in (7, 8, 9) and rng.random() < profile["miss_small"]:
            continue
        pad = 4
        big = tuple(slice(max(b.start - pad, 0), min(b.stop + pad, n)) for b, n in zip(box, label.shape))
        mask = label[big] == lab
        if lab == 14:
            comps, n = ndimage.label(mask)
            keep = [i for i in range(1, n + 1) if rng.random() >= profile["miss_lesion"]]
            mask = np.isin(comps, keep)
        steps = int(np.round(rng.normal(0.0, profile["boundary"])))
        if steps > 0:
            mask = ndimage.binary_dilation(mask, iterations=steps)
        elif steps < 0 and lab not in (7, 8, 14):
            mask = ndimage.binary_erosion(mask, iterations=-steps)
        move = rng.integers(-1, 2, size=3) * (rng.random(3) < profile["boundary"] / 3)
        mask = np.roll(mask, tuple(int(m) for m in move), axis=(0, 1, 2))
        region = out[big]
        region[mask & ((region == 0) | (lab == 14))] = lab
    liver = np.argwhere(label == 1)
    for _ in range(int(rng.poisson(profile["fp_lesions"]))):
        if liver.size == 0:
            break
        c = liver[rng.integers(len(liver))]
        r = int(rng.integers(1, 3))
        sl = tuple(slice(max(v - r, 0), v + r + 1) for v in c)
        out[sl] = np.where(label[sl] == 1, np.uint8(14), out[sl])
    return out


def write_phantom_set(
    out_dir: StrPath,
    *,
    cases: int,
    seed: int,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing_mm: Spacing = DEFAULT_SPACING_MM,
    prediction_quality: str | None = None,
    missing_predictions: int = 0,
    prefix: str = "phantom",
) -> list[str]:
    """Write a challenge folder: ``images/<id>_0000.nii.gz``, ``labels/<id>.nii.gz`` and,
    with ``prediction_quality``, ``predictions/<id>.nii.gz`` (the last ``missing_predictions``
    cases left out, as a team that failed them).

    Returns the case ids.  Case ``k`` uses seed ``seed + k``, so sets with different seeds
    and counts can overlap; choose seeds far apart for disjoint sets.
    """
    from flare_eval.io import write_image, write_label

    out = Path(out_dir)
    ids = []
    for k in range(cases):
        case_id = f"{prefix}_{seed + k:04d}"
        phantom = make_phantom(seed + k, shape=shape, spacing_mm=spacing_mm)
        write_image(out / "images" / f"{case_id}_0000.nii.gz", phantom.image, affine=phantom.affine)
        write_label(out / "labels" / f"{case_id}.nii.gz", phantom.label, affine=phantom.affine)
        if prediction_quality is not None and k < cases - missing_predictions:
            pred = simulate_prediction(phantom.label, seed + k + 100_000, quality=prediction_quality)  # type: ignore[arg-type]
            write_label(out / "predictions" / f"{case_id}.nii.gz", pred, affine=phantom.affine)
        ids.append(case_id)
    return ids
