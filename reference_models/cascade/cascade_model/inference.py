"""The two-stage predictor: ROI on a coarse grid, then 15 classes on the crop.

Stage 1 resamples the whole normalised scan to the ROI grid (about 5 mm), and its binary
"any organ" map (small components dropped) gives a bounding box, widened by the plans' margins
in mm; an empty map falls back to the whole scan.  Stage 2 resamples that crop to the organ
grid, runs a Gaussian-weighted sliding window, takes the argmax at network resolution (the
FLARE23 third place's speed-up: upsampling labels, not 15 probability maps), keeps the largest
component of each organ (lesions keep all components), and pastes the nearest-neighbour
upsampled labels back into the full grid.  On a GPU both networks run in fp16 and all
resampling happens on the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage

from cascade_model.network import UNet3D
from cascade_model.plans import ORGAN_LABELS, IntensityPlan, Plans, StagePlan
from cascade_model.volume import resample_image, resample_label, target_shape

__all__ = ["CascadePredictor", "RoiBox", "gaussian_importance", "window_starts", "keep_largest_components"]


@dataclass(frozen=True)
class RoiBox:
    """A half-open voxel box ``[start, stop)`` per axis, on the full-resolution canonical grid."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    fallback: bool

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))  # type: ignore[return-value]


def gaussian_importance(patch_size: tuple[int, int, int], sigma_scale: float = 0.125) -> torch.Tensor:
    """nnU-Net's sliding-window weights: a Gaussian of sigma ``patch * sigma_scale``, peak 1.

    Border voxels of a window see the least context, so they count least where windows overlap;
    the floor keeps every voxel's weight positive.
    """
    axes = [torch.arange(n, dtype=torch.float32) - (n - 1) / 2.0 for n in patch_size]
    grids = torch.meshgrid(*axes, indexing="ij")
    exponent = sum((g / (n * sigma_scale)) ** 2 for g, n in zip(grids, patch_size))
    weights = torch.exp(-0.5 * exponent)
    weights /= weights.max()
    return weights.clamp_min(1e-3)


def window_starts(size: int, patch: int, step_fraction: float = 0.5) -> list[int]:
    """Start indices of windows of ``patch`` voxels covering ``size`` (``size >= patch``).

    >>> window_starts(100, 64)
    [0, 36]
    >>> window_starts(64, 64)
    [0]
    """
    count = int(np.ceil((size - patch) / (patch * step_fraction))) + 1
    if count == 1:
        return [0]
    return [int(round(v)) for v in np.linspace(0, size - patch, count)]


def keep_largest_components(label: NDArray[np.uint8], labels: tuple[int, ...]) -> NDArray[np.uint8]:
    """Set all but the largest 6-connected component of each of ``labels`` to background.

    Works on each label's bounding box only, and returns a new array.
    """
    out = label.copy()
    boxes = ndimage.find_objects(out, max_label=max(labels))
    for lab in labels:
        box = boxes[lab - 1]
        if box is None:
            continue
        mask = out[box] == lab
        components, count = ndimage.label(mask)
        if count > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            out[box][mask & (components != sizes.argmax())] = 0
    return out


def _normalise(image: torch.Tensor, plan: IntensityPlan) -> torch.Tensor:
    return (image.clamp(plan.clip_low, plan.clip_high) - plan.mean) / plan.std


def _load_network(weights_dir: Path, stage: StagePlan, device: torch.device) -> UNet3D:
    net = UNet3D(1, stage.num_classes, stage.features)
    state = torch.load(weights_dir / stage.weights, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.to(device).eval()


class CascadePredictor:
    """Load the cascade once, then segment any number of scans.

    Parameters
    ----------
    weights_dir
        Folder with ``plans.json`` and the two state dicts it names.
    device
        ``"cuda"`` or ``"cpu"``; default: CUDA when available.  fp16 autocast on CUDA only.
    """

    def __init__(self, weights_dir: str | Path, device: str | None = None) -> None:
        weights_dir = Path(weights_dir)
        self.plans = Plans.load(weights_dir / "plans.json")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.roi_net = _load_network(weights_dir, self.plans.roi, self.device)
        self.organ_net = _load_network(weights_dir, self.plans.organs, self.device)

    def _run(self, net: UNet3D, batch: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities of a (B, 1, X, Y, Z) batch, in float32."""
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda"):
            logits = net(batch)
        return torch.softmax(logits.float(), dim=1)

    @torch.inference_mode()
    def predict(self, image: NDArray[np.float32], spacing_mm: tuple[float, float, float]) -> NDArray[np.uint8]:
        """Segment one scan given in canonical RAS order.

        Parameters
        ----------
        image
            HU intensities, shape (X, Y, Z).
        spacing_mm
            Voxel size along those axes.

        Returns
        -------
        numpy.ndarray
            uint8 labels 0..14, same shape as ``image``.
        """
        volume = _normalise(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(self.device),
                            self.plans.intensity)
        box = self.find_roi(volume, spacing_mm)
        crop = volume[box.slices]
        del volume
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        crop_labels = self.segment_crop(crop, spacing_mm)
        out = np.zeros(image.shape, dtype=np.uint8)
        out[box.slices] = crop_labels
        return out

    def find_roi(self, volume: torch.Tensor, spacing_mm: tuple[float, float, float]) -> RoiBox:
        """Stage 1: the box around everything the ROI network calls organ, plus the margins."""
        plan = self.plans.roi
        shape = target_shape(volume.shape, spacing_mm, plan.spacing_mm)
        coarse = resample_image(volume, shape)
        # at least one training patch (a tiny scan would otherwise reach a 1-voxel bottleneck),
        # else the next multiple of the network's divisor
        divisor = self.roi_net.divisor
        size = [max(-(-n // divisor) * divisor, p) for n, p in zip(shape, plan.patch_size)]
        padded, unpad = _pad_to(coarse, size, value=float(coarse.min()))
        mask = self._run(self.roi_net, padded[None, None])[0].argmax(0)[unpad].cpu().numpy().astype(bool)
        components, count = ndimage.label(mask)
        voxel_ml = float(np.prod(plan.spacing_mm)) / 1000.0
        sizes = np.bincount(components.ravel())[1:] * voxel_ml
        keep = np.isin(components, 1 + np.flatnonzero(sizes >= self.plans.roi_min_component_ml))
        full = tuple(int(n) for n in volume.shape)
        if not keep.any():
            return RoiBox(start=(0, 0, 0), stop=full, fallback=True)  # type: ignore[arg-type]
        where = np.argwhere(keep)
        start, stop = [], []
        for axis in range(3):
            scale = full[axis] / shape[axis]  # full-resolution voxels per coarse voxel
            low_mm, high_mm = self.plans.roi_margin_mm[axis]
            low = where[:, axis].min() * scale - low_mm / spacing_mm[axis]
            high = (where[:, axis].max() + 1) * scale + high_mm / spacing_mm[axis]
            start.append(max(0, int(np.floor(low))))
            stop.append(min(full[axis], int(np.ceil(high))))
        return RoiBox(start=tuple(start), stop=tuple(stop), fallback=False)  # type: ignore[arg-type]

    def segment_crop(self, crop: torch.Tensor, spacing_mm: tuple[float, float, float]) -> NDArray[np.uint8]:
        """Stage 2 on a normalised crop: sliding window, argmax, clean-up, back to the crop grid."""
        plan = self.plans.organs
        shape = target_shape(crop.shape, spacing_mm, plan.spacing_mm)
        image = resample_image(crop, shape)
        size = [max(n, p) for n, p in zip(shape, plan.patch_size)]
        image, unpad = _pad_to(image, size, value=float(image.min()))
        weights = gaussian_importance(plan.patch_size).to(self.device)
        scores = torch.zeros((plan.num_classes, *size), device=self.device)
        starts = [window_starts(n, p) for n, p in zip(size, plan.patch_size)]
        for x in starts[0]:
            for y in starts[1]:
                for z in starts[2]:
                    window = tuple(slice(a, a + p) for a, p in zip((x, y, z), plan.patch_size))
                    probs = self._run(self.organ_net, image[window][None, None])[0]
                    scores[(slice(None), *window)] += probs * weights
        labels = scores[(slice(None), *unpad)].argmax(0).to(torch.uint8).cpu().numpy()
        labels = keep_largest_components(labels, ORGAN_LABELS)
        return resample_label(labels, tuple(crop.shape))  # type: ignore[arg-type]


def _pad_to(
    image: torch.Tensor, size: list[int], value: float = 0.0
) -> tuple[torch.Tensor, tuple[slice, slice, slice]]:
    """Pad a (X, Y, Z) tensor at the high end to ``size``; return it and the slices undoing it."""
    pads: list[int] = []
    for n, m in reversed(list(zip(image.shape, size))):
        pads += [0, max(m - n, 0)]
    unpad = tuple(slice(0, n) for n in image.shape)
    if any(pads):
        image = torch.nn.functional.pad(image, pads, value=value)
    return image, unpad  # type: ignore[return-value]
