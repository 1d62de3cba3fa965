"""Reader parity with nibabel, the official scorer's reader, on damaged gzip streams.

nibabel inflates only the bytes the header asks for and never looks at the gzip trailer: a file
without its trailer, with a wrong CRC or length, or with bytes after the stream loads, so the
official scorer scores it.  flare-eval must read those files too (with a ReadWarning) and refuse
exactly the files nibabel refuses.  nibabel itself is the oracle here.
"""

from __future__ import annotations

import gzip
import warnings

import nibabel as nib
import numpy as np
import pytest

from flare_eval.errors import InputError
from flare_eval.io import ReadWarning, ShapeMismatch, read_label


def _volume() -> np.ndarray:
    data = np.zeros((20, 18, 10), np.uint8)
    data[4:12, 3:9, 2:7] = 3
    data[14:18, 10:16, 5:9] = 14
    return data


def _nifti_bytes(data: np.ndarray) -> bytes:
    return nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.5, 1.0])).to_bytes()


def _variants(raw: bytes) -> dict[str, bytes]:
    whole = gzip.compress(raw)
    half = len(raw) // 2
    return {
        "intact": whole,
        "no_trailer": whole[:-8],
        "wrong_crc": whole[:-8] + b"\0\0\0\0" + whole[-4:],
        "wrong_length": whole[:-4] + b"\1\0\0\0",
        "trailing_garbage": whole + b"garbage after the stream",
        "trailing_zeros": whole + b"\0" * 100,
        # bgzip and concatenated writers split a file into gzip members; gzip readers join them
        "two_members": gzip.compress(raw[:half]) + gzip.compress(raw[half:]),
        "truncated_voxels": whole[: len(whole) // 2],
        "truncated_header": whole[:40],
    }


def _nibabel_reads(path) -> np.ndarray | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asanyarray(nib.load(path).dataobj)
    except Exception:
        return None


@pytest.mark.parametrize("variant", list(_variants(b"")))
def test_reads_what_nibabel_reads_and_refuses_what_it_refuses(tmp_path, variant):
    data = _volume()
    path = tmp_path / f"{variant}.nii.gz"
    path.write_bytes(_variants(_nifti_bytes(data))[variant])
    expected = _nibabel_reads(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            got = read_label(path).data
        except InputError as err:
            got, error = None, str(err)
    damaged = [w for w in caught if issubclass(w.category, ReadWarning)]
    if expected is None:
        assert got is None, f"{variant}: nibabel refuses it, flare-eval read it"
        assert path.name in error
    else:
        assert got is not None, f"{variant}: nibabel reads it, flare-eval refused: {error}"
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(got, data)
        # a clean end is silent; a damaged one is named (the file, what is wrong)
        clean = variant in ("intact", "trailing_zeros", "two_members")
        assert (not damaged) == clean, (variant, [str(w.message) for w in damaged])
        if damaged:
            assert path.name in str(damaged[0].message)
            assert "read as nibabel" in str(damaged[0].message)


def test_the_oracle_accepts_the_damaged_files(tmp_path):
    # guard: were nibabel to start refusing these, the test above would pass vacuously
    raw = _variants(_nifti_bytes(_volume()))
    for variant in ("no_trailer", "wrong_crc", "wrong_length", "trailing_garbage"):
        path = tmp_path / f"{variant}.nii.gz"
        path.write_bytes(raw[variant])
        assert _nibabel_reads(path) is not None, variant


def test_a_wrong_shape_is_refused_before_any_voxel_is_inflated(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header["dim"] = [3, 4096, 4096, 4096, 1, 1, 1, 1]  # 64 GiB announced
    header["vox_offset"] = 352
    path = tmp_path / "bomb.nii.gz"
    # only the header and 1 MiB of voxels are in the stream: inflating would hit its end
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 2**20))
    with pytest.raises(ShapeMismatch, match=r"bomb\.nii\.gz: shape \(4096, 4096, 4096\) differs "
                                            r"from the reference's \(20, 18, 10\)"):
        read_label(path, shape=(20, 18, 10))
    # without a shape to meet, the same file is a truncated stream, named
    with pytest.raises(InputError, match=r"bomb\.nii\.gz: truncated voxel data \(the header needs"):
        read_label(path)
