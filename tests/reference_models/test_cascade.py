"""The reference cascade: geometry round trip, partial-label loss, training smoke test, predict.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.reference_models.conftest import CASCADE_DIR  # noqa: E402

from cascade_model.inference import keep_largest_components, window_starts  # noqa: E402
from cascade_model.losses import partial_dice_ce_loss  # noqa: E402
from cascade_model.training import train_stage  # noqa: E402
from cascade_model.volume import read_canonical, to_stored_order, write_label_like  # noqa: E402

pytestmark = pytest.mark.torch

# stored P, L, I (like the DeepLesion crop): axis 0 runs posterior, axis 1 left, axis 2 inferior
PLI_AFFINE = np.array([
    [0.0, -0.8, 0.0, 100.0],
    [-0.9, 0.0, 0.0, 50.0],
    [0.0, 0.0, -2.5, 30.0],
    [0.0, 0.0, 0.0, 1.0],
])


def _write(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_canonical_round_trip_keeps_shape_affine_and_voxels(tmp_path: Path, rng: np.random.Generator) -> None:
    stored = rng.integers(0, 15, size=(7, 5, 3)).astype(np.uint8)
    volume = read_canonical(_write(tmp_path / "in_0000.nii.gz", stored.astype(np.int16), PLI_AFFINE))
    # RAS x comes from stored axis 1 (left, flipped), y from axis 0 (posterior, flipped), z from
    # axis 2 (inferior, flipped): shape (5, 7, 3), spacing (0.8, 0.9, 2.5) by hand from the affine.
    assert volume.data.shape == (5, 7, 3)
    assert volume.spacing_mm == pytest.approx((0.8, 0.9, 2.5))
    assert volume.data[0, 0, 0] == stored[-1, -1, -1]
    back = to_stored_order(volume.data.astype(np.uint8), volume)
    np.testing.assert_array_equal(back, stored)
    write_label_like(tmp_path / "out.nii.gz", back, volume.source)
    out = nib.load(str(tmp_path / "out.nii.gz"))
    assert out.shape == stored.shape and out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(out.affine, PLI_AFFINE, atol=1e-6)


def test_partial_label_loss_matches_hand_computed_value() -> None:
    # 2 voxels, 3 classes, all logits 0 so every softmax probability is 1/3; class 2 unannotated.
    # Voxel 0 (label 0): merged background p = 1/3 + 1/3 -> CE log(3/2); voxel 1 (label 1): log 3.
    # Dice of class 1: q = (1/3, 1/3), g = (0, 1): 2 * (1/3) / (2/3 + 1) = 0.4, loss 1 - 0.4.
    logits = torch.zeros(1, 3, 2, 1, 1)
    target = torch.tensor([0, 1]).view(1, 2, 1, 1)
    annotated = torch.tensor([[True, True, False]])
    loss = partial_dice_ce_loss(logits, target, annotated, smooth=0.0)
    assert loss.item() == pytest.approx((math.log(1.5) + math.log(3.0)) / 2 + 0.6, rel=1e-6)


def test_partial_label_loss_does_not_punish_unannotated_organs() -> None:
    target = torch.zeros(1, 4, 1, 1, dtype=torch.long)
    says_class_2 = torch.tensor([0.0, 0.0, 5.0]).view(1, 3, 1, 1, 1).expand(1, 3, 4, 1, 1)
    partial = partial_dice_ce_loss(says_class_2, target, torch.tensor([[True, True, False]]))
    full = partial_dice_ce_loss(says_class_2, target, torch.tensor([[True, True, True]]))
    # merged background p = (1 + e^5) / (2 + e^5) with class 2 unannotated, 1 / (2 + e^5) if not
    assert partial.item() < 0.01 < 4.0 < full.item()


def test_partial_label_loss_rejects_undeclared_classes() -> None:
    with pytest.raises(ValueError, match="not declared annotated"):
        partial_dice_ce_loss(torch.zeros(1, 3, 2, 1, 1), torch.tensor([0, 2]).view(1, 2, 1, 1),
                             torch.tensor([[True, True, False]]))


def test_window_starts_cover_the_volume() -> None:
    starts = window_starts(100, 48)
    assert starts[0] == 0 and starts[-1] == 100 - 48
    assert all(b - a <= 24 for a, b in zip(starts, starts[1:]))


def test_keep_largest_components_per_organ() -> None:
    label = np.zeros((10, 3, 3), dtype=np.uint8)
    label[0:4] = 1  # 36 voxels
    label[6:7] = 1  # 9 voxels, a separate blob: dropped
    label[8:10] = 14  # lesion label is not in the cleaned labels: kept
    out = keep_largest_components(label, (1,))
    assert (out == 1).sum() == 36 and (out[6] == 0).all() and (out == 14).sum() == 18
    assert (label == 1).sum() == 45  # input untouched


def _tiny_dataset(root: Path, rng: np.random.Generator) -> Path:
    affine = np.diag([-4.0, -4.0, 5.0, 1.0])  # LPS-stored, as the phantoms
    for index in range(2):
        label = np.zeros((24, 24, 16), dtype=np.uint8)
        label[4:12, 6:14, 3:10] = 1
        label[14:20, 8:14, 5:12] = 13
        label[6:8, 8:10, 5:7] = 14
        image = np.where(label > 0, 80.0, -50.0) + rng.normal(0.0, 10.0, label.shape)
        _write(root / "imagesTr" / f"case{index}_0000.nii.gz", image.astype(np.int16), affine)
        _write(root / "labelsTr" / f"case{index}.nii.gz", label, affine)
    # case1 annotates the liver only: its kidney and lesion labels are dropped from the loss
    (root / "annotated_classes.json").write_text(json.dumps({"case1": [1]}))
    return root


@pytest.mark.slow
def test_training_smoke_resume_and_predict(tmp_path: Path, rng: np.random.Generator) -> None:
    dataset = _tiny_dataset(tmp_path / "data", rng)
    weights = tmp_path / "weights"
    common = dict(datasets=[dataset], annotations=[], out=weights, batch_size=1,
                  checkpoint_every=2, progress=False)
    roi = train_stage(stage="roi", steps=2, patch_size=(16, 16, 16), **common)
    organs = train_stage(stage="organs", steps=2, patch_size=(16, 16, 16), **common)
    assert len(roi) == len(organs) == 2 and all(math.isfinite(v) for v in roi + organs)
    resumed = train_stage(stage="organs", steps=3, resume=True, **common)
    assert len(resumed) == 1  # steps 0-1 came from the checkpoint
    plans = json.loads((weights / "plans.json").read_text())
    assert plans["organs"]["patch_size"] == [16, 16, 16]
    assert (weights / "roi.pt").is_file() and (weights / "organs.pt").is_file()

    import subprocess
    import sys

    inputs = tmp_path / "inputs"
    _write(inputs / "scan_0000.nii.gz", rng.normal(0, 50, (20, 18, 9)).astype(np.int16), PLI_AFFINE)
    run = subprocess.run(
        ["sh", str(CASCADE_DIR / "predict.sh"), "--outputs", str(tmp_path / "outputs"), "--device", "cpu"],
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "FLARE_INPUTS": str(inputs),
             "FLARE_WEIGHTS": str(weights), "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    out = nib.load(str(tmp_path / "outputs" / "scan.nii.gz"))
    assert out.shape == (20, 18, 9) and out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(out.affine, PLI_AFFINE, atol=1e-6)
    assert int(np.asarray(out.dataobj).max()) <= 14


@pytest.mark.slow
@pytest.mark.shared_data
def test_shipped_weights_on_a_real_scan_keep_its_grid(shared_data: Path, tmp_path: Path) -> None:
    import predict  # reference_models/cascade/predict.py, with the shipped weights

    scan = shared_data / "totalseg-pair" / "images" / "ts_pair_0000.nii.gz"
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / scan.name).symlink_to(scan)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CI shares its cores
    try:
        assert predict.main(["--inputs", str(inputs), "--outputs", str(tmp_path / "out"), "--device", "cpu"]) == 0
    finally:
        torch.set_num_threads(threads)
    source = nib.load(str(scan))
    out = nib.load(str(tmp_path / "out" / "ts_pair.nii.gz"))
    assert out.shape == source.shape and out.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(out.affine, source.affine)
    labels = set(np.unique(np.asarray(out.dataobj)).tolist())
    assert labels <= set(range(15)) and 1 in labels  # the liver fills most of these slices


def test_overlay_is_drawn_in_radiological_convention(tmp_path: Path, rng: np.random.Generator) -> None:
    from cascade_model.overlay import main as overlay_main

    ct = rng.integers(-100, 100, size=(20, 18, 9)).astype(np.int16)
    label = np.zeros(ct.shape, np.uint8)
    # PLI storage: low axis-0 indices are anterior, low axis-1 indices the patient's right.
    label[:5, :6, :] = 1
    image = _write(tmp_path / "ct_0000.nii.gz", ct, PLI_AFFINE)
    pred = _write(tmp_path / "pred.nii.gz", label, PLI_AFFINE)
    out = tmp_path / "overlay.png"
    overlay_main(["--image", str(image), "--pred", str(pred), "--ref", str(pred), "--out", str(out)])

    import matplotlib.image

    pixels = matplotlib.image.imread(str(out))[..., :3]
    coloured = (np.ptp(pixels, axis=2) > 0.1)  # the CT is grey; only the overlay has colour
    height, width = coloured.shape
    # top-left panel: axial prediction; the liver belongs in its anterior-right (top-left) corner
    panel = coloured[: height // 2, : width // 2]
    rows, cols = np.nonzero(panel)
    assert rows.size > 100
    assert cols.mean() < panel.shape[1] / 2 and rows.mean() < panel.shape[0] / 2
