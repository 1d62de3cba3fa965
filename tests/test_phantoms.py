"""Phantoms: deterministic, plausible, and written as a challenge folder."""

from __future__ import annotations

import numpy as np
import pytest

from flare_eval.errors import ConfigError
from flare_eval.metrics.flare import score_case
from flare_eval.phantoms import make_phantom, simulate_prediction, write_phantom_set


def test_same_seed_same_phantom_other_seed_other_phantom():
    a, b, c = (make_phantom(s, shape=(48, 48, 32), spacing_mm=(8.0, 8.0, 10.0)) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert not np.array_equal(a.label, c.label)


def test_all_organs_present_with_plausible_volumes_and_intensities():
    p = make_phantom(0)
    voxel_ml = np.prod(p.spacing_mm) / 1000.0
    volumes = {lab: (p.label == lab).sum() * voxel_ml for lab in range(1, 14)}
    assert all(v > 0 for v in volumes.values())
    assert 1000 < volumes[1] < 2600  # liver, ml
    assert volumes[7] < 20 and volumes[8] < 20  # adrenal glands are small
    assert p.image[p.label == 5].mean() > p.image[p.label == 1].mean()  # contrast in the aorta
    assert p.image.min() >= -1024 and p.image.dtype == np.int16
    assert np.linalg.det(p.affine[:3, :3]) > 0 and p.affine[0, 0] < 0  # LPS-stored


def test_prediction_quality_orders_the_scores():
    p = make_phantom(2)
    means = []
    for quality in ("excellent", "good", "poor"):
        pred = simulate_prediction(p.label, 9, quality=quality)
        means.append(np.mean([s.dsc for s in score_case(p.label, pred, spacing_mm=p.spacing_mm)[:13]]))
    assert means[0] > means[1] > means[2]


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="at least 8 voxels"):
        make_phantom(0, shape=(4, 4, 4))
    with pytest.raises(ConfigError, match="quality must be one of"):
        simulate_prediction(np.zeros((8, 8, 8), np.uint8), 0, quality="perfect")  # type: ignore[arg-type]


def test_written_folder_layout(tmp_path):
    ids = write_phantom_set(tmp_path, cases=2, seed=5, shape=(32, 32, 24), spacing_mm=(10.0, 10.0, 12.0),
                            prediction_quality="fair", missing_predictions=1)
    assert ids == ["phantom_0005", "phantom_0006"]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["phantom_0005_0000.nii.gz", "phantom_0006_0000.nii.gz"]
    assert [p.name for p in (tmp_path / "predictions").iterdir()] == ["phantom_0005.nii.gz"]
