"""Reading label files: values as nibabel reads them, and a clear error for every kind of bad file."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from flare_eval.errors import InputError
from flare_eval.io import LabelWarning, read_image, read_label, write_label


def save(path, data, affine=None, dtype=None, zooms=None):
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    if dtype is not None:
        img.set_data_dtype(dtype)
    if zooms is not None:
        img.header.set_zooms(zooms)
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_values_equal_nibabel_for_every_dtype(tmp_path, rng, dtype):
    data = rng.integers(0, 15, size=(7, 6, 5)).astype(dtype)
    path = save(tmp_path / "a.nii.gz", data)
    vol = read_label(path, max_label=14)
    assert vol.data.dtype == np.uint8
    np.testing.assert_array_equal(vol.data, np.asanyarray(nib.load(path).dataobj).astype(np.uint8))
    assert vol.spacing_mm == (1.0, 1.0, 1.0)


def test_uncompressed_and_spacing_from_header(tmp_path):
    path = save(tmp_path / "a.nii", np.ones((3, 4, 5), np.uint8), zooms=(0.8, 0.7, 2.5))
    vol = read_label(path)
    assert vol.spacing_mm == (float(np.float32(0.8)), float(np.float32(0.7)), 2.5)
    assert vol.c_view()[0].shape == (5, 4, 3) and vol.c_view()[1] == vol.spacing_mm[::-1]


def test_scaled_labels_are_applied(tmp_path):
    img = nib.Nifti1Image(np.full((3, 3, 3), 2, np.int16), np.eye(4))
    img.header.set_slope_inter(2.0, 1.0)  # stored 2 -> 5
    nib.save(img, str(tmp_path / "s.nii.gz"))
    assert set(np.unique(read_label(tmp_path / "s.nii.gz").data)) == {5}


def test_labels_outside_the_map_warn_and_become_background(tmp_path):
    data = np.zeros((4, 4, 4), np.int16)
    data[0, 0, 0], data[1, 1, 1], data[2, 2, 2] = 3, 20, -1
    path = save(tmp_path / "o.nii.gz", data)
    with pytest.warns(LabelWarning, match=r"o\.nii\.gz.*outside the label map 0\.\.14.*\[-1, 20\]"):
        vol = read_label(path, max_label=14)
    assert sorted(np.unique(vol.data)) == [0, 3]


def test_uint8_labels_outside_the_map_warn_too(tmp_path):
    data = np.zeros((4, 4, 4), np.uint8)
    data[0, 0, 0] = 15
    with pytest.warns(LabelWarning, match=r"\[15\]"):
        assert read_label(save(tmp_path / "u.nii.gz", data), max_label=14).data.max() == 0


def test_non_integer_values_are_refused(tmp_path):
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 1, 1] = 1.5
    with pytest.raises(InputError, match=r"f\.nii\.gz.*non-integer values.*1\.5"):
        read_label(save(tmp_path / "f.nii.gz", data))


def test_nan_is_refused(tmp_path):
    data = np.zeros((4, 4, 4), np.float32)
    data[0, 0, 0] = np.nan
    with pytest.raises(InputError, match=r"n\.nii\.gz.*NaN"):
        read_label(save(tmp_path / "n.nii.gz", data))


@pytest.mark.parametrize("shape", [(4, 4), (4, 4, 4, 2)])
def test_2d_and_4d_are_refused(tmp_path, shape):
    path = save(tmp_path / "d.nii.gz", np.zeros(shape, np.uint8))
    with pytest.raises(InputError, match=rf"d\.nii\.gz.*expected a 3D volume, got {len(shape)}D"):
        read_label(path)


def test_4d_with_one_volume_is_accepted(tmp_path):
    path = save(tmp_path / "d.nii.gz", np.ones((4, 4, 4, 1), np.uint8))
    assert read_label(path).data.shape == (4, 4, 4)


def test_truncated_gzip_is_named(tmp_path):
    path = save(tmp_path / "t.nii.gz", np.ones((20, 20, 20), np.uint8))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"t\.nii\.gz: corrupt or truncated gzip"):
        read_label(path)


def test_corrupt_gzip_is_named(tmp_path):
    path = tmp_path / "c.nii.gz"
    raw = bytearray(gzip.compress(b"x" * 1000))
    raw[20:30] = b"\xff" * 10
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"c\.nii\.gz: corrupt or truncated gzip"):
        read_label(path)


def test_gz_name_without_gzip_is_named(tmp_path):
    path = tmp_path / "p.nii.gz"
    path.write_bytes(b"not a nifti at all" * 30)
    with pytest.raises(InputError, match="not gzip-compressed"):
        read_label(path)


def test_unreadable_header_is_named(tmp_path):
    path = tmp_path / "h.nii"
    path.write_bytes(b"\x00" * 400)
    with pytest.raises(InputError, match=r"h\.nii: unreadable NIfTI header"):
        read_label(path)


def test_truncated_voxel_data_is_named(tmp_path):
    path = save(tmp_path / "v.nii", np.ones((10, 10, 10), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match=r"v\.nii: truncated voxel data"):
        read_label(path)


def test_zero_spacing_is_refused(tmp_path):
    path = save(tmp_path / "z.nii.gz", np.ones((3, 3, 3), np.uint8), zooms=(1.0, 0.0, 1.0))
    with pytest.raises(InputError, match=r"z\.nii\.gz: voxel spacing must be three positive"):
        read_label(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match=r"nope\.nii\.gz: no such file"):
        read_label(tmp_path / "nope.nii.gz")


def test_write_label_round_trip_keeps_affine(tmp_path, rng):
    data = rng.integers(0, 15, size=(5, 6, 7)).astype(np.uint8)
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    write_label(tmp_path / "w.nii.gz", data, affine=affine)
    back = nib.load(tmp_path / "w.nii.gz")
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), data)
    np.testing.assert_allclose(back.affine, affine)
    assert back.get_data_dtype() == np.uint8


def test_real_non_ras_crop_reads_like_nibabel(shared_data):
    path = shared_data / "deeplesion-crop" / "labels" / "dl_000015.nii.gz"
    vol = read_label(path, max_label=14)
    assert vol.data.shape == (512, 512, 13)
    assert int((vol.data == 14).sum()) == 14490  # the data README's lesion voxel count
    np.testing.assert_array_equal(vol.affine, nib.load(path).affine)
    image = read_image(shared_data / "deeplesion-crop" / "images" / "dl_000015_0000.nii.gz")
    assert image.data.dtype == np.int16
