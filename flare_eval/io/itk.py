"""MetaImage (``.mha``) and NRRD (``.nrrd``) volumes through SimpleITK, in nibabel's conventions.

nibabel reads neither format; SimpleITK does, but it speaks ITK's conventions: the array comes
as (z, y, x) and the geometry is an LPS origin, direction and spacing.  This module hands back
what :mod:`flare_eval.io.nifti` hands back for a NIfTI file, so the geometry rules, the label
checks and the errors are the same whatever the format, and a ``.mha`` prediction can be
compared with a ``.nii.gz`` reference:

- the voxels in stored order (i, j, k) = ITK's (x, y, z): the transposed view of SimpleITK's
  array, Fortran-ordered like nibabel's;
- the spacing from ``GetSpacing()`` as float32 values, like ``header.get_zooms()[:3]``;
- the RAS voxel-to-world affine nibabel uses: ``diag(-1, -1, 1) @ [D @ diag(s) | o]`` for ITK's
  LPS direction ``D``, spacing ``s`` and origin ``o`` (the inverse of what ITK does when it reads
  a NIfTI file, so a file converted by SimpleITK keeps its affine to rounding).

The header is read first (``ImageFileReader.ReadImageInformation``): the shape, the pixel type
and whether the voxels are compressed are checked by :mod:`flare_eval.io.nifti` against the same
rules as a NIfTI header (the expected shape, the most a compressed stream can inflate to) before
ITK allocates or inflates anything, so a small file declaring a huge volume costs nothing.

Both formats can keep the voxels in another file named by the header (MetaImage's
``ElementDataFile``, NRRD's ``data file``), which ITK opens wherever it points: a prediction
naming the reference file would score perfectly.  Only self-contained files are read
(``ElementDataFile = LOCAL``, no ``data file`` field); the header is checked before ITK sees it.

SimpleITK is imported only when such a file is read or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from flare_eval.errors import ConfigError, InputError
from flare_eval.typing import Spacing

__all__ = ["ITK_EXTENSIONS", "ItkHeader", "check_self_contained", "is_itk_file", "ras_affine",
           "read_itk_header", "load_itk", "save_itk"]

#: File endings read and written through SimpleITK (single-file formats only: a ``.mhd`` or
#: ``.nhdr`` header names a second data file, which a submission could point anywhere).
ITK_EXTENSIONS: tuple[str, ...] = (".mha", ".nrrd")

#: LPS <-> RAS: x and y change sign.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def is_itk_file(path: Path | str) -> bool:
    """Whether ``path`` names a format read through SimpleITK (by its ending)."""
    return str(path).endswith(ITK_EXTENSIONS)


#: Bytes of a header looked at (MetaImage and NRRD headers are a few hundred bytes of text).
_HEADER_BYTES = 1 << 16


def _header_lines(path: Path) -> list[str]:
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEADER_BYTES)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot be read ({err.strerror})") from None
    return head.decode("latin-1").split("\n")


#: How the voxels follow the header: as stored (``raw``, also NRRD's ``hex``), deflated
#: (MetaImage ``CompressedData = True``, NRRD ``gzip``) or as text numbers (NRRD ``ascii``).
Encoding = Literal["raw", "deflate", "text"]
_NRRD_ENCODINGS: dict[str, Encoding] = {"raw": "raw", "hex": "raw", "gzip": "deflate",
                                        "gz": "deflate", "ascii": "text", "text": "text",
                                        "txt": "text"}


def check_self_contained(path: Path) -> Encoding:
    """Refuse a ``.mha`` / ``.nrrd`` whose voxels live in another file (see the module docs).

    Returns
    -------
    str
        How the voxels are encoded (``raw``, ``deflate`` or ``text``), from the header.

    Raises
    ------
    InputError
        A header that names a data file, an encoding ITK cannot read, or no header of the
        format at all.
    """
    lines = [line.rstrip("\r") for line in _header_lines(path)]
    if path.name.endswith(".mha"):
        encoding: Encoding = "raw"
        for line in lines:
            key, _, value = line.partition("=")
            if key.strip().lower() == "compresseddata" and value.strip().lower() == "true":
                encoding = "deflate"
            if key.strip().lower() == "elementdatafile":  # the header's last line
                if value.strip() != "LOCAL":
                    raise InputError(
                        f"{path}: MetaImage header names a separate data file "
                        f"{ascii(value.strip())[1:-1][:80]}, expected ElementDataFile = LOCAL",
                        hint="write a self-contained .mha (voxels after the header)")
                return encoding
        raise InputError(f"{path}: no MetaImage header (no ElementDataFile line in the first "
                         f"{_HEADER_BYTES} bytes)")
    if not lines[0].startswith("NRRD000"):
        raise InputError(f"{path}: not a NRRD file (first bytes {lines[0][:8]!r}, expected 'NRRD000')")
    encoding = "raw"  # NRRD requires the field; ITK's reader fails without it
    for line in lines[1:]:
        if not line.strip():
            return encoding  # the blank line that ends the header
        key, sep, value = line.partition(":")
        if not sep or line.startswith("#"):
            continue
        if key.replace(" ", "").lower() == "datafile":
            raise InputError(
                f"{path}: NRRD header names a separate data file {ascii(value.strip())[1:-1][:80]}",
                hint="write a self-contained .nrrd (no 'data file' field)")
        if key.strip().lower() == "encoding":
            name = value.strip().lower()
            if name not in _NRRD_ENCODINGS:  # bzip2: ITK's NrrdIO is built without it
                raise InputError(f"{path}: NRRD encoding {ascii(name)[1:-1][:20]} is not read; "
                                 f"expected one of {sorted(_NRRD_ENCODINGS)}")
            encoding = _NRRD_ENCODINGS[name]
    raise InputError(f"{path}: NRRD header does not end within {_HEADER_BYTES} bytes")


def _simpleitk() -> Any:
    try:
        import SimpleITK
    except ImportError:
        raise ConfigError("reading .mha / .nrrd files needs SimpleITK",
                          hint="pip install SimpleITK") from None
    return SimpleITK


def ras_affine(direction: NDArray[np.floating], spacing: NDArray[np.floating],
               origin: NDArray[np.floating]) -> NDArray[np.float64]:
    """The RAS voxel-to-world affine (nibabel's) of ITK's LPS geometry.

    Parameters
    ----------
    direction
        3x3 direction cosines, columns = array axes (ITK's ``GetDirection()`` reshaped row-major).
    spacing
        Voxel size along the three array axes, mm.
    origin
        World position of voxel (0, 0, 0), LPS, mm.

    Returns
    -------
    numpy.ndarray
        4x4 float64.

    Examples
    --------
    >>> (ras_affine(np.eye(3), np.array([0.8, 0.8, 2.5]), np.array([10.0, 20.0, 30.0]))[:3] + 0.0).tolist()
    [[-0.8, 0.0, 0.0, -10.0], [0.0, -0.8, 0.0, -20.0], [0.0, 0.0, 2.5, 30.0]]
    """
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ np.asarray(direction, np.float64) @ np.diag(np.asarray(spacing, np.float64))
    affine[:3, 3] = _LPS_TO_RAS @ np.asarray(origin, np.float64)
    return affine


@dataclass(frozen=True)
class ItkHeader:
    """What a ``.mha`` / ``.nrrd`` header declares, read before any voxel.

    Attributes
    ----------
    shape
        (X, Y, Z), ITK's size (a trailing size-1 fourth axis dropped).
    itemsize
        Bytes per voxel of the stored pixel type.
    encoding
        ``raw``, ``deflate`` or ``text`` (:func:`check_self_contained`).
    file_bytes
        Size of the file.
    """

    shape: tuple[int, int, int]
    itemsize: int
    encoding: Encoding
    file_bytes: int


def _unreadable(path: Path, err: RuntimeError) -> InputError:
    # ITK's message is a multi-line C++ trace; its last line says what was wrong
    reason = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown reason"
    return InputError(f"{path}: unreadable {path.suffix} file ({reason})")


def read_itk_header(path: Path) -> ItkHeader:
    """Read and check a ``.mha`` / ``.nrrd`` header (``ReadImageInformation``: no voxel).

    Raises
    ------
    InputError
        Missing or unreadable file, a detached data file, not 3D, more than one component per
        voxel, a pixel type that is not an integer or a float.
    """
    sitk = _simpleitk()
    encoding = check_self_contained(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise _unreadable(path, err) from None
    size = tuple(int(n) for n in reader.GetSize())
    if len(size) == 4 and size[3] == 1:
        size = size[:3]
    if len(size) != 3:
        raise InputError(
            f"{path}: expected a 3D volume, got {len(size)}D with shape {size}",
            hint="FLARE cases are single 3D volumes",
        )
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    if reader.GetNumberOfComponents() != 1:
        raise InputError(f"{path}: expected one value per voxel, got "
                         f"{reader.GetNumberOfComponents()} components ({pixel})")
    itemsize = {sitk.sitkUInt8: 1, sitk.sitkInt8: 1, sitk.sitkUInt16: 2, sitk.sitkInt16: 2,
                sitk.sitkUInt32: 4, sitk.sitkInt32: 4, sitk.sitkUInt64: 8, sitk.sitkInt64: 8,
                sitk.sitkFloat32: 4, sitk.sitkFloat64: 8}.get(reader.GetPixelID())
    if itemsize is None:
        raise InputError(f"{path}: unsupported data type {pixel} (integers or floats of at most "
                         "8 bytes)")
    return ItkHeader(size, itemsize, encoding, path.stat().st_size)  # type: ignore[arg-type]


def load_itk(path: Path) -> tuple[NDArray[np.generic], Spacing, NDArray[np.float64]]:
    """Read a 3D ``.mha`` / ``.nrrd`` volume as ``(data, spacing_mm, affine)``.

    ``data`` has shape (X, Y, Z) in stored order (Fortran-ordered), the dtype as stored.  Read
    its header with :func:`read_itk_header` and check it first: this inflates the voxels.

    Raises
    ------
    InputError
        Unreadable file, bad spacing.
    """
    sitk = _simpleitk()
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise _unreadable(path, err) from None
    if image.GetDimension() == 4:  # a size-1 fourth axis (read_itk_header refuses any other)
        image = image[:, :, :, 0]
    spacing = np.asarray(image.GetSpacing(), np.float64)
    if not all(np.isfinite(z) and z > 0 for z in spacing):
        raise InputError(f"{path}: voxel spacing must be three positive numbers, got {spacing.tolist()}")
    direction = np.asarray(image.GetDirection(), np.float64).reshape(3, 3)
    origin = np.asarray(image.GetOrigin(), np.float64)
    data = sitk.GetArrayFromImage(image).T  # (z, y, x) C-order -> (x, y, z) Fortran-order view
    spacing_mm = tuple(float(np.float32(z)) for z in spacing)
    return data, spacing_mm, ras_affine(direction, spacing, origin)  # type: ignore[return-value]


def save_itk(path: Path, data: NDArray[np.generic], affine: NDArray[np.floating]) -> None:
    """Write ``data`` (X, Y, Z) with the RAS ``affine`` as a compressed ``.mha`` / ``.nrrd``.

    Raises
    ------
    InputError
        When the affine has a zero column (no spacing) or its axes are not orthogonal (ITK keeps
        spacing and direction apart, so a sheared affine has no exact MetaImage form).
    """
    sitk = _simpleitk()
    linear = _LPS_TO_RAS @ np.asarray(affine, np.float64)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if not np.all(spacing > 0):
        raise InputError(f"{path}: affine has a zero axis, spacing {spacing.tolist()}")
    direction = linear / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-6):
        raise InputError(f"{path}: affine axes are not orthogonal; {path.suffix} stores spacing "
                         "and a rotation only")
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data).T))
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.ravel().tolist())
    image.SetOrigin((_LPS_TO_RAS @ np.asarray(affine, np.float64)[:3, 3]).tolist())
    sitk.WriteImage(image, str(path), useCompression=True)
