"""``.mha`` and ``.nrrd`` volumes: the values, spacing and affine nibabel gives for the same volume.

SimpleITK itself is the oracle of the geometry: it converts a NIfTI file written by nibabel
into each format (ITK's own RAS -> LPS conversion), and flare-eval must read back nibabel's
affine from the result.
"""

from __future__ import annotations

import zlib

import nibabel as nib
import numpy as np
import pytest

from flare_eval.errors import InputError
from flare_eval.io import LabelWarning, ShapeMismatch, read_image, read_label, write_label
from tests.conftest import require_module

sitk = require_module("SimpleITK")

# A rotated grid (i runs along -y, j along +x), anisotropic spacing, an offset origin.
AFFINE = np.array([[0.0, 0.7, 0.0, -12.5], [-0.8, 0.0, 0.0, 40.0], [0.0, 0.0, 2.5, -300.0],
                   [0.0, 0.0, 0.0, 1.0]])


def nifti(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def converted(source, target):
    """``source`` rewritten by SimpleITK in the format of ``target``'s ending."""
    sitk.WriteImage(sitk.ReadImage(str(source)), str(target), useCompression=True)
    return target


@pytest.mark.parametrize("ext", [".mha", ".nrrd", ".nii"])
def test_same_volume_as_nibabel_reads_it(tmp_path, rng, ext):
    data = rng.integers(0, 15, size=(7, 6, 5)).astype(np.uint8)
    reference = read_label(nifti(tmp_path / "a.nii.gz", data))
    volume = read_label(converted(tmp_path / "a.nii.gz", tmp_path / f"b{ext}"))
    np.testing.assert_array_equal(volume.data, data)
    # float32 spacing as nibabel's get_zooms(): (0.8, 0.7, 2.5) are the column norms of AFFINE
    assert volume.spacing_mm == reference.spacing_mm == (float(np.float32(0.8)), float(np.float32(0.7)), 2.5)
    np.testing.assert_allclose(volume.affine, AFFINE, atol=1e-6)
    view, spacing = volume.c_view()
    assert view.shape == (5, 6, 7) and spacing == reference.spacing_mm[::-1]


@pytest.mark.parametrize("ext", [".mha", ".nrrd"])
def test_written_geometry_is_what_itk_expects(tmp_path, ext):
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    affine = np.diag([0.8, 0.7, 2.5, 1.0])
    affine[:3, 3] = (10.0, -20.0, 30.0)
    write_label(tmp_path / f"a{ext}", data, affine=affine)
    image = sitk.ReadImage(str(tmp_path / f"a{ext}"))
    # RAS -> LPS by hand: x and y change sign, in the direction and in the origin
    assert image.GetDirection() == (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    assert image.GetOrigin() == (-10.0, 20.0, 30.0)
    np.testing.assert_allclose(image.GetSpacing(), (0.8, 0.7, 2.5))
    assert image.GetSize() == (2, 3, 4)
    # ITK's array is (z, y, x): voxel (i, j, k) = (1, 2, 3) is data[1, 2, 3] = 1*12 + 2*4 + 3
    assert sitk.GetArrayViewFromImage(image)[3, 2, 1] == 23
    # the header holds the doubles 0.8 and 0.7; read back as float32, as nibabel's get_zooms()
    assert read_label(tmp_path / f"a{ext}").spacing_mm == (float(np.float32(0.8)), float(np.float32(0.7)), 2.5)


def test_detached_data_files_are_refused(tmp_path):
    """A header may point the voxels at any file, e.g. the reference: ITK would read it."""
    reference = np.zeros((4, 4, 4), np.uint8)
    reference[1:3, 1:3, 1:3] = 1
    (tmp_path / "ref.raw").write_bytes(reference.tobytes(order="F"))
    header = ("ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_UCHAR\n"
              f"ElementDataFile = {tmp_path / 'ref.raw'}\n")
    (tmp_path / "p.mha").write_text(header)
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "p.mha"))).sum() == 8  # the threat
    with pytest.raises(InputError, match=r"p\.mha: MetaImage header names a separate data file .*ref\.raw"):
        read_label(tmp_path / "p.mha")
    (tmp_path / "p.nrrd").write_text("NRRD0004\ntype: uchar\ndimension: 3\nsizes: 4 4 4\n"
                                     f"encoding: raw\ndata file: {tmp_path / 'ref.raw'}\n\n")
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "p.nrrd"))).sum() == 8
    with pytest.raises(InputError, match=r"p\.nrrd: NRRD header names a separate data file"):
        read_label(tmp_path / "p.nrrd")


def test_bad_files_name_the_file(tmp_path):
    (tmp_path / "junk.mha").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match=r"junk\.mha: no MetaImage header"):
        read_label(tmp_path / "junk.mha")
    (tmp_path / "junk.nrrd").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(InputError, match=r"junk\.nrrd: not a NRRD file"):
        read_label(tmp_path / "junk.nrrd")
    with pytest.raises(InputError, match=r"gone\.mha: no such file"):
        read_label(tmp_path / "gone.mha")
    # a valid header whose compressed voxels were cut off
    write_label(tmp_path / "t.mha", np.ones((30, 30, 30), np.uint8) * np.arange(30, dtype=np.uint8),
                affine=np.eye(4))
    raw = (tmp_path / "t.mha").read_bytes()
    (tmp_path / "t.mha").write_bytes(raw[: len(raw) - 40])
    with pytest.raises(InputError, match=r"t\.mha: unreadable \.mha file"):
        read_label(tmp_path / "t.mha")


def test_shape_and_pixel_rules_are_the_nifti_ones(tmp_path):
    sitk.WriteImage(sitk.Image([4, 4], sitk.sitkUInt8), str(tmp_path / "flat.mha"))
    with pytest.raises(InputError, match=r"flat\.mha: expected a 3D volume, got 2D"):
        read_label(tmp_path / "flat.mha")
    sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkVectorUInt8, 3), str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match=r"rgb\.nrrd: expected one value per voxel, got 3"):
        read_label(tmp_path / "rgb.nrrd")
    values = np.zeros((4, 4, 4), np.float32)
    values[1, 1, 1] = 1.5
    sitk.WriteImage(sitk.GetImageFromArray(values), str(tmp_path / "f.mha"))
    with pytest.raises(InputError, match=r"f\.mha: label volume holds non-integer values.*1\.5"):
        read_label(tmp_path / "f.mha")
    labels = np.zeros((4, 4, 4), np.int16)
    labels[0, 0, 0] = 20
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(tmp_path / "o.nrrd"))
    with pytest.warns(LabelWarning, match=r"o\.nrrd.*outside the label map 0\.\.14.*\[20\]"):
        assert read_label(tmp_path / "o.nrrd", max_label=14).data.max() == 0
    image = read_image(tmp_path / "o.nrrd")
    assert image.data.dtype == np.int16 and image.data[0, 0, 0] == 20


def _bomb(path, size: str, compressed: bool = True) -> None:
    """A header declaring ``size`` voxels of one byte, followed by 100 zeros deflated (~12 bytes)."""
    voxels = zlib.compress(b"\0" * 100)
    if path.suffix == ".mha":
        header = ("ObjectType = Image\nNDims = 3\nDimSize = " + size + "\nElementType = MET_UCHAR\n"
                  + (f"CompressedData = True\nCompressedDataSize = {len(voxels)}\n" if compressed else "")
                  + "ElementDataFile = LOCAL\n")
    else:
        header = (f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: {size}\n"
                  f"encoding: {'gzip' if compressed else 'raw'}\n\n")
    path.write_bytes(header.encode() + voxels)


@pytest.mark.parametrize("ext", [".mha", ".nrrd"])
def test_a_small_file_declaring_a_huge_volume_is_refused_on_its_header(tmp_path, ext):
    """10^12 voxels from a file of about 150 bytes: deflate inflates a byte to 1032 at most, so
    the file cannot hold them; refused before ITK allocates (it would allocate 1 TB)."""
    path = tmp_path / f"bomb{ext}"
    _bomb(path, "10000 10000 10000")
    size = path.stat().st_size
    with pytest.raises(InputError, match=rf"bomb\{ext}: truncated voxel data \(the header needs "
                                         rf"1000000000000 bytes, a file of {size} bytes cannot"):
        read_label(path)
    # the expected shape is checked on the header first, as for NIfTI
    with pytest.raises(ShapeMismatch, match=r"\(10000, 10000, 10000\)"):
        read_label(path, shape=(4, 4, 4))
    # at the bound: 1032 x the file's bytes pass the header checks (and ITK then reads them)
    just = tmp_path / f"just{ext}"
    _bomb(just, "1 1 1")
    edge = just.stat().st_size * 1032
    _bomb(just, f"1 1 {edge}")  # the header grows with the digits of edge: still room
    assert just.stat().st_size * 1032 >= edge
    try:  # ITK's own error (its stream ends early) or a volume, never the refusal on the header
        read_label(just)
    except InputError as err:
        assert "unreadable" in err.message and "truncated voxel data" not in err.message
    # stored (not compressed) voxels: the file holds as many bytes as voxels at most
    raw = tmp_path / f"raw{ext}"
    _bomb(raw, "10 10 10", compressed=False)
    with pytest.raises(InputError, match=r"truncated voxel data \(the header needs 1000 bytes"):
        read_label(raw)


def test_nrrd_encodings(tmp_path):
    # text numbers: "0 " is two characters for an 8-byte double (4 x the file's bytes)
    values = np.zeros((3, 3, 3))
    values[1, 1, 1] = 2
    text = " ".join(str(int(v)) for v in values.ravel(order="F"))
    (tmp_path / "t.nrrd").write_text("NRRD0004\ntype: double\ndimension: 3\nsizes: 3 3 3\n"
                                     f"encoding: ascii\n\n{text}\n")
    np.testing.assert_array_equal(read_image(tmp_path / "t.nrrd").data, values)
    (tmp_path / "b.nrrd").write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 3 3 3\n"
                                      b"encoding: bzip2\n\nBZh9")
    with pytest.raises(InputError, match=r"b\.nrrd: NRRD encoding bzip2 is not read; expected one of"):
        read_label(tmp_path / "b.nrrd")
