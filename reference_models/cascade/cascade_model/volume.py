"""NIfTI volumes in canonical orientation, resampling, and writing labels back on the input grid.

Both networks see every scan in nibabel's canonical RAS+ voxel order (indices increase towards
the patient's right, anterior and superior), whatever the file's stored orientation, so "inferior margin" and the anatomy the networks learned mean the same thing for
every input.  Predictions are turned back to the stored order before writing, so the output has
the input's exact shape and affine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

__all__ = [
    "CanonicalVolume",
    "read_canonical",
    "to_stored_order",
    "write_label_like",
    "resample_image",
    "nearest_indices",
    "resample_label",
    "target_shape",
]

_RAS = nib.orientations.axcodes2ornt(("R", "A", "S"))


@dataclass(frozen=True)
class CanonicalVolume:
    """A scan reoriented to RAS voxel order.

    Attributes
    ----------
    data
        Intensities (float32), shape (X, Y, Z) in RAS order.
    spacing_mm
        Voxel size along the RAS-ordered axes.
    source
        The image as read, for its shape, affine and header.
    orientation
        nibabel orientation array of the stored axes (what undoes the reorientation).
    """

    data: NDArray[np.float32]
    spacing_mm: tuple[float, float, float]
    source: nib.Nifti1Image
    orientation: NDArray[np.float64]


def read_canonical(path: str | Path) -> CanonicalVolume:
    """Read a 3D NIfTI image and reorient its voxels to RAS order (no resampling).

    Raises
    ------
    ValueError
        When the file is not a 3D volume.
    """
    image = nib.load(str(path))
    if len(image.shape) != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {image.shape}")
    orientation = nib.io_orientation(image.affine)
    to_ras = nib.orientations.ornt_transform(orientation, _RAS)
    data = np.asarray(image.dataobj, dtype=np.float32)
    data = np.ascontiguousarray(nib.orientations.apply_orientation(data, to_ras))
    zooms = np.asarray(image.header.get_zooms()[:3], dtype=np.float64)
    # to_ras[i, 0] is the RAS axis that stored axis i becomes, so RAS axis j is stored axis
    # argsort(to_ras[:, 0])[j].
    spacing = tuple(float(zooms[int(axis)]) for axis in to_ras[:, 0].argsort())
    return CanonicalVolume(data=data, spacing_mm=spacing, source=image, orientation=orientation)  # type: ignore[arg-type]


def to_stored_order(label_ras: NDArray[np.uint8], volume: CanonicalVolume) -> NDArray[np.uint8]:
    """Turn a RAS-ordered label map back into ``volume``'s stored voxel order."""
    back = nib.orientations.ornt_transform(_RAS, volume.orientation)
    return np.ascontiguousarray(nib.orientations.apply_orientation(label_ras, back)).astype(np.uint8)


def write_label_like(path: str | Path, label: NDArray[np.uint8], like: nib.Nifti1Image) -> None:
    """Write a uint8 label map with ``like``'s affine, qform and sform codes.

    Raises
    ------
    ValueError
        When ``label``'s shape differs from ``like``'s.
    """
    if label.shape != like.shape[:3]:
        raise ValueError(f"label shape {label.shape} differs from the input's {like.shape[:3]} for {path}")
    out = nib.Nifti1Image(label.astype(np.uint8), like.affine)
    out.set_data_dtype(np.uint8)
    header = like.header
    out.set_qform(like.affine, code=int(header["qform_code"]) or 1)
    out.set_sform(like.affine, code=int(header["sform_code"]) or 1)
    out.header.set_zooms(header.get_zooms()[:3])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(out, str(path))


def target_shape(
    shape: tuple[int, ...], spacing_mm: tuple[float, ...], new_spacing_mm: tuple[float, ...]
) -> tuple[int, int, int]:
    """Voxels per axis after resampling to ``new_spacing_mm`` (same field of view, at least 1)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing_mm, new_spacing_mm))  # type: ignore[return-value]


def resample_image(image: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Trilinear resampling of a (X, Y, Z) tensor to ``shape`` on its own device.

    ``align_corners=False``: voxel centres map as ``(i + 0.5) * n_src / n_dst - 0.5``, the
    convention :func:`nearest_indices` inverts.
    """
    if tuple(image.shape) == tuple(shape):
        return image
    return F.interpolate(image[None, None], size=shape, mode="trilinear", align_corners=False)[0, 0]


def nearest_indices(n_source: int, n_target: int) -> NDArray[np.intp]:
    """For each of ``n_target`` voxels, the nearest of ``n_source`` voxels on the same extent.

    >>> nearest_indices(2, 4).tolist()
    [0, 0, 1, 1]
    """
    index = np.floor((np.arange(n_target) + 0.5) * (n_source / n_target)).astype(np.intp)
    return np.minimum(index, n_source - 1)


def resample_label(label: NDArray[np.uint8], shape: tuple[int, int, int]) -> NDArray[np.uint8]:
    """Nearest-neighbour resampling of a label map to ``shape`` (index gathering, no floats)."""
    if label.shape == tuple(shape):
        return label
    ix, iy, iz = (nearest_indices(n, m) for n, m in zip(label.shape, shape))
    return label[np.ix_(ix, iy, iz)]
