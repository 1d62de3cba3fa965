"""Reading and writing NIfTI volumes fast, without float copies, and with errors that name the file.

Label files are read the way the official FLARE23 scorer reads them (nibabel, stored voxel order
(i, j, k), no reorientation, spacing from ``header.get_zooms()[:3]`` as float32), but without
``get_fdata()``: the gzip stream is inflated with ISA-L (``isal.igzip``, several times faster than
zlib) and the voxel array is a zero-copy view on the inflated bytes.  nibabel arrays are
Fortran-ordered; :meth:`LabelVolume.c_view` gives the free C-ordered transposed view with the
spacing reversed, on which the metrics run ~2x faster.  ``.mha`` and ``.nrrd`` files go through
:mod:`flare_eval.io.itk` and come back in the same conventions (stored order, float32 spacing,
nibabel's RAS affine), so every check below applies to them unchanged.
"""

from __future__ import annotations

import gzip
import io
import math
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import isal.igzip
from isal import isal_zlib
from isal.igzip_lib import DECOMP_DEFLATE, IgzipDecompressor, IsalError
import nibabel as nib
import numpy as np
from numpy.typing import NDArray

from flare_eval.errors import InputError
from flare_eval.io.atomic import atomic_path
from flare_eval.io.itk import is_itk_file, load_itk, read_itk_header, save_itk
from flare_eval.typing import Spacing, StrPath

__all__ = [
    "ImageVolume",
    "LabelVolume",
    "LabelWarning",
    "ReadWarning",
    "ShapeMismatch",
    "read_image",
    "read_label",
    "write_label",
    "write_image",
]


class LabelWarning(UserWarning):
    """A label file holds values outside the label map (they are scored as background)."""


@dataclass(frozen=True)
class ImageVolume:
    """A 3D volume as stored on disk.

    Attributes
    ----------
    data
        Voxel values, shape (X, Y, Z) in stored voxel order, dtype as stored (scaling applied,
        then float64, only where the header asks for it).
    spacing_mm
        Voxel size along the three array axes, from ``header.get_zooms()[:3]`` (float32 values).
    affine
        4x4 voxel-to-world matrix (float64).
    path
        Where it was read from.
    """

    data: NDArray[np.generic]
    spacing_mm: Spacing
    affine: NDArray[np.float64]
    path: Path


@dataclass(frozen=True)
class LabelVolume(ImageVolume):
    """A label volume: ``data`` is uint8 class ids (values outside the map already set to 0).

    Attributes
    ----------
    outside_labels
        The values outside the map the file held (sorted; empty for a proper label map), for
        the rules that judge the file's own values
        (:attr:`~flare_eval.presets.Preset.out_of_map_labels`).
    """

    outside_labels: tuple[int, ...] = ()

    def c_view(self) -> tuple[NDArray[np.uint8], Spacing]:
        """The C-contiguous view of ``data`` with axes reversed, and the spacing reversed to match.

        Free for nibabel's Fortran-ordered arrays; a copy otherwise.
        """
        view = np.ascontiguousarray(self.data.T)
        return view, self.spacing_mm[::-1]


# A NIfTI-2 header (540 bytes) and its 4-byte extension flag: every header field is in here
_HEADER_BYTES = 544
_NIFTI1_HEADER_BYTES = 348
# Exceptions of a damaged gzip stream (IsalError for ISA-L's own checks)
_GZIP_ERRORS = (OSError, EOFError, zlib.error, ValueError, IsalError)


class ShapeMismatch(InputError):
    """A volume's header declares another shape than the one asked for (found before any voxel
    is inflated)."""

    def __init__(self, path: Path, found: tuple[int, ...], expected: tuple[int, ...]) -> None:
        super().__init__(f"{path}: shape {found} differs from the reference's {expected}")
        self.found, self.expected = found, expected


class ReadWarning(UserWarning):
    """A file read the way nibabel reads it, although its gzip stream is damaged after the voxels
    (no trailer, a wrong checksum, trailing bytes): the official scorer scores such a file."""


def _parse_header(head: bytes, path: Path) -> tuple[nib.Nifti1Header, NDArray[np.float32]]:
    """The checked header and the raw pixdim[1:4] (nibabel turns a zero pixdim into 1 while
    checking; the unchecked header tells)."""
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        try:
            header = klass.from_fileobj(io.BytesIO(head))
            raw_pixdim = klass.from_fileobj(io.BytesIO(head), check=False)["pixdim"][1:4]
            return header, raw_pixdim
        except Exception:  # nibabel raises several types for a foreign header; try the next format
            continue
    raise InputError(f"{path}: unreadable NIfTI header (neither NIfTI-1 nor NIfTI-2)")


# Deflate's largest ratio (a 258-byte match in under 2 bits): no stream of n bytes inflates to
# more than ~1032 n, so a header asking for more is truncated whatever the stream holds
_DEFLATE_MAX_RATIO = 1032


def _check_room(path: Path, needed: int, file_bytes: int, expansion: int) -> None:
    """Refuse a header that asks for more bytes than the file can hold, before a buffer of the
    header's size is made: NIfTI and ``.mha`` / ``.nrrd`` alike.

    ``expansion`` is the most one byte of the file can become: 1 stored, ``_DEFLATE_MAX_RATIO``
    deflated, the item size for text numbers (one character per value at least).
    """
    if needed > file_bytes * expansion:
        raise InputError(f"{path}: truncated voxel data (the header needs {needed} bytes, "
                         f"a file of {file_bytes} bytes cannot hold them)")
_FTEXT, _FHCRC, _FEXTRA, _FNAME, _FCOMMENT = 1, 2, 4, 8, 16


def _member_start(raw: memoryview, pos: int) -> int:
    """Where the deflate data of the gzip member at ``pos`` begins (RFC 1952 header).

    Parsed here because the stdlib and ISA-L readers check the trailer as soon as they reach
    it, while nibabel's reader stops at the last voxel and never does.
    """
    if bytes(raw[pos:pos + 3]) != b"\x1f\x8b\x08":
        raise gzip.BadGzipFile(f"no gzip member at byte {pos}")  # named by the caller
    flags, pos = raw[pos + 3], pos + 10
    if flags & _FEXTRA:
        pos += 2 + int.from_bytes(raw[pos:pos + 2], "little")
    for flag in (_FNAME, _FCOMMENT):
        if flags & flag:
            end = bytes(raw[pos:]).find(b"\0")
            if end < 0:
                raise EOFError("gzip header ends inside a name")
            pos += end + 1
    if flags & _FHCRC:
        pos += 2
    if pos > len(raw):
        raise EOFError("gzip header ends early")
    return pos


class _GzipReader:
    """Inflate a gzip file's bytes as nibabel's reader does: member after member, no trailer
    checked on the way, and nothing inflated beyond what is asked for; :meth:`end_note` says
    afterwards whether the stream ended cleanly."""

    def __init__(self, raw: memoryview) -> None:
        self._raw, self._at = raw, _member_start(raw, 0)
        self._member()
        self._trailer_ok = True
        self._finished = False  # no more voxel bytes: the last member (or the file) ended
        self._after = b""  # bytes after the last member's trailer

    def _member(self) -> None:
        # raw deflate, ISA-L's (faster than zlib): the gzip trailer is read by _next_member
        self._inflater = IgzipDecompressor(flag=DECOMP_DEFLATE)
        self._crc = self._size = 0

    def _inflate(self, most: int) -> bytes:
        """Up to ``most`` bytes of the member (b"" where it needs input and the file ended)."""
        data: bytes | memoryview = b""
        if self._inflater.needs_input:
            data, self._at = self._raw[self._at:], len(self._raw)  # a view: no copy
            if not data:
                return b""
        piece = self._inflater.decompress(data, most)
        self._crc, self._size = isal_zlib.crc32(piece, self._crc), self._size + len(piece)
        return piece

    def read(self, n: int) -> bytes | bytearray:
        """``n`` bytes, fewer only where the data ends.  One member gives them in one piece,
        used as it is; the pieces of several members (bgzip) are joined."""
        pieces, got = [], 0
        while got < n and not self._finished:
            piece = self._inflate(n - got)
            pieces.append(piece)
            got += len(piece)
            if self._inflater.eof:
                self._next_member()
            elif not piece and self._inflater.needs_input and self._at >= len(self._raw):
                self._finished, self._trailer_ok = True, False  # the file ends mid-stream
        if len(pieces) == 1:
            return pieces[0]
        return b"".join(pieces)

    def _next_member(self) -> None:
        # offsets into the file, not copies of its rest: a bgzip file has a member per 64 KiB
        rest = self._at - len(self._inflater.unused_data)
        trailer = ((self._crc & 0xFFFFFFFF).to_bytes(4, "little")
                   + (self._size & 0xFFFFFFFF).to_bytes(4, "little"))
        self._trailer_ok = self._trailer_ok and bytes(self._raw[rest:rest + 8]) == trailer
        after = rest + 8
        if bytes(self._raw[after:after + 3]) == b"\x1f\x8b\x08":
            self._at = _member_start(self._raw, after)
            self._member()
        else:
            self._finished, self._after = True, bytes(self._raw[after:])

    def end_note(self) -> str | None:
        """What follows the bytes read, where it is not a clean end of the stream."""
        if not self._finished:
            while not self._inflater.eof:
                if self._inflate(1):
                    return "its gzip stream holds more data than the header's voxels (ignored)"
                if self._inflater.needs_input and self._at >= len(self._raw):
                    return "its gzip stream ends without its trailer"
            self._next_member()
            if not self._finished:
                return "its gzip stream holds another member after the voxels (ignored)"
        if not self._trailer_ok:
            return "its gzip trailer is missing or does not match the data (checksum or length)"
        if self._after.strip(b"\0"):  # zero padding: gzip readers skip it
            return f"{len(self._after)} bytes that are not gzip follow its stream (ignored)"
        return None


class _PlainReader:
    """An uncompressed file's bytes, with the same two methods as :class:`_GzipReader`."""

    def __init__(self, raw: memoryview) -> None:
        self._raw = raw

    def read(self, n: int) -> bytes | memoryview:
        return self._raw[:n]

    def end_note(self) -> str | None:
        return None


def _load(path: StrPath, shape: tuple[int, ...] | None = None
          ) -> tuple[NDArray[np.generic], Spacing, NDArray[np.float64], Path]:
    """``(data, spacing, affine, path)``; ``.mha`` / ``.nrrd`` through
    :func:`~flare_eval.io.itk.load_itk` after the checks of their header (``shape``, the room
    the file has), NIfTI by :func:`_load_nifti`."""
    path = Path(path)
    if is_itk_file(path):
        header = read_itk_header(path)
        if shape is not None and header.shape != tuple(shape):
            raise ShapeMismatch(path, header.shape, tuple(shape))
        expansion = {"raw": 1, "deflate": _DEFLATE_MAX_RATIO, "text": header.itemsize}
        # math.prod: exact for any declared size (a numpy product can overflow int64)
        _check_room(path, math.prod(header.shape) * header.itemsize, header.file_bytes,
                    expansion[header.encoding])
        data, spacing, affine = load_itk(path)
        return data, spacing, affine, path
    return _load_nifti(path, shape)


def _load_nifti(path: Path, shape: tuple[int, ...] | None
                ) -> tuple[NDArray[np.generic], Spacing, NDArray[np.float64], Path]:
    """Read the header, check it, then inflate exactly the bytes it needs, as nibabel does.

    Only the header's bytes are inflated before the checks (3D, data type, and ``shape`` when
    given), so a gzip bomb whose header declares another shape costs nothing; the voxels are
    inflated into one buffer of the header's size, never beyond it.  The voxel array is a
    zero-copy view on that buffer.
    """
    try:
        raw = memoryview(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot be read ({err.strerror})") from None
    gzipped = bytes(raw[:2]) == b"\x1f\x8b"
    if not gzipped and path.name.endswith(".gz"):
        raise InputError(f"{path}: named .gz but is not gzip-compressed "
                         f"(first bytes {bytes(raw[:4])!r})")
    try:
        reader: _GzipReader | _PlainReader
        # the header from a reader of its own: the voxels' reader then gives the file's first
        # bytes in one piece, on which the array is a view
        head = bytes((_GzipReader(raw) if gzipped else _PlainReader(raw)).read(_HEADER_BYTES))
        if gzipped and len(head) < _NIFTI1_HEADER_BYTES:
            raise EOFError(f"the stream ends after {len(head)} bytes, inside the header")
        header, raw_pixdim = _parse_header(bytes(head), path)
        found = tuple(int(n) for n in header.get_data_shape())
        if len(found) == 4 and found[3] == 1:
            found = found[:3]
        if len(found) != 3:
            raise InputError(
                f"{path}: expected a 3D volume, got {len(found)}D with shape {found}",
                hint="FLARE cases are single 3D volumes",
            )
        if shape is not None and found != tuple(shape):
            raise ShapeMismatch(path, found, tuple(shape))
        dtype = np.dtype(header.get_data_dtype())
        if dtype.kind not in "iubf" or dtype.itemsize > 8:
            raise InputError(f"{path}: unsupported data type {dtype} (integers or floats of "
                             "at most 8 bytes)")
        offset = int(header.get_data_offset())
        needed = offset + int(np.prod(found)) * dtype.itemsize
        _check_room(path, needed, len(raw), _DEFLATE_MAX_RATIO if gzipped else 1)
        reader = _GzipReader(raw) if gzipped else _PlainReader(raw)
        buffer = reader.read(needed)
        got = len(buffer)
        damage = reader.end_note() if got >= needed else None
    except InputError:
        raise  # a ValueError too, but the file's own problem, not the stream's
    except MemoryError:
        raise InputError(f"{path}: its {needed} bytes of voxels do not fit in memory") from None
    except _GZIP_ERRORS as err:
        raise InputError(
            f"{path}: corrupt or truncated gzip stream ({err})",
            hint="re-export the file; a partial copy or an interrupted write looks like this",
        ) from None
    if got < needed and gzipped:
        raise InputError(
            f"{path}: corrupt or truncated gzip stream (it ends after {got} of the {needed} bytes "
            "the header needs)",
            hint="re-export the file; a partial copy or an interrupted write looks like this",
        )
    if got < needed:
        raise InputError(f"{path}: truncated voxel data ({got} bytes, header needs {needed})")
    if damage:
        warnings.warn(f"{path}: {damage}; read as nibabel (and the official scorer) reads it",
                      ReadWarning, stacklevel=3)
    data = np.ndarray(found, dtype=dtype, buffer=buffer, offset=offset, order="F")
    slope, inter = header.get_slope_inter()  # None where the header asks for no scaling
    slope, inter = 1.0 if slope is None else slope, 0.0 if inter is None else inter
    if (slope, inter) != (1.0, 0.0):
        data = data * np.float64(slope) + np.float64(inter)
    if not all(np.isfinite(z) and z > 0 for z in raw_pixdim):
        raise InputError(
            f"{path}: voxel spacing must be three positive numbers, got {raw_pixdim.tolist()}"
        )
    spacing = tuple(float(np.float32(z)) for z in header.get_zooms()[:3])
    # the voxel-to-world matrix nibabel gives the image of this header (``image.affine``)
    return data, spacing, header.get_best_affine().astype(np.float64), path  # type: ignore[return-value]


def read_image(path: StrPath) -> ImageVolume:
    """Read a 3D image (``.nii.gz``, ``.nii``, ``.mha`` or ``.nrrd``) as stored.

    Parameters
    ----------
    path
        File to read.

    Returns
    -------
    ImageVolume

    Raises
    ------
    InputError
        Missing file, corrupt or truncated gzip, unreadable header, not 3D, bad spacing.
    """
    data, spacing, affine, p = _load(path)
    return ImageVolume(data=data, spacing_mm=spacing, affine=affine, path=p)


def read_label(path: StrPath, *, max_label: int = 255,
               shape: tuple[int, ...] | None = None) -> LabelVolume:
    """Read a label volume as uint8 class ids, checking that it is a proper label map.

    Parameters
    ----------
    path
        File to read.
    max_label
        Largest label of the map.  Values above it (and negative ones) are outside the map: the
        official scorer ignores them, so they are set to 0 (background) with a
        :class:`LabelWarning` that names the file and the values.
    shape
        The shape the volume must have (the reference's, for a prediction): checked on the
        header before any voxel is inflated, so a file declaring a larger volume costs nothing.

    Returns
    -------
    LabelVolume
        ``data`` is uint8; a zero-copy view of the file's bytes where the file stores uint8.

    Raises
    ------
    InputError
        As :func:`read_image`, plus NaN or infinite values, and non-integer values (the official
        scorer would silently truncate 1.7 to 1; flare-eval refuses to guess).
        :class:`ShapeMismatch` when ``shape`` is given and the header declares another.

    Warns
    -----
    LabelWarning
        Values outside the label map.
    ReadWarning
        A gzip stream damaged after the voxels (missing trailer, wrong checksum, trailing
        data): read as nibabel reads it.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "case.nii.gz")
    >>> write_label(path, np.eye(3, dtype=np.uint8)[:, :, None].repeat(2, 2), affine=np.eye(4))
    >>> read_label(path).data.sum()
    np.uint64(6)
    """
    data, spacing, affine, p = _load(path, shape)
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise InputError(f"{p}: label volume holds NaN or infinite values")
        if not np.array_equal(data, np.trunc(data)):
            bad = np.unique(data[data != np.trunc(data)])[:5]
            raise InputError(
                f"{p}: label volume holds non-integer values, e.g. {bad.tolist()}",
                hint="labels must be whole numbers; the official scorer would truncate them",
            )
    # min/max are SIMD reductions: cheap next to anything that compares every voxel to the map
    low, high = (0, int(data.max())) if data.dtype == np.uint8 else (data.min(), data.max())
    if low < 0 or high > max_label:
        outside = (data < 0) | (data > max_label)
        values = np.unique(data[outside])
        warnings.warn(
            f"{p}: values outside the label map 0..{max_label} scored as background: "
            f"{values[:10].tolist()}{' ...' if values.size > 10 else ''}",
            LabelWarning,
            stacklevel=2,
        )
        data = np.where(outside, 0, data)
    else:
        values = np.empty(0, dtype=np.int64)
    labels = data if data.dtype == np.uint8 else data.astype(np.uint8, order="K")
    return LabelVolume(data=labels, spacing_mm=spacing, affine=affine, path=p,
                       outside_labels=tuple(int(v) for v in values))


def _atomic_save(image: nib.Nifti1Image, path: Path) -> None:
    """Write ``image`` to ``path`` through a temporary file in the same folder (never half-written);
    a ``.mha`` / ``.nrrd`` name is written through SimpleITK with the same geometry."""
    if is_itk_file(path):
        with atomic_path(path, suffix=path.suffix) as tmp:
            save_itk(tmp, np.asanyarray(image.dataobj).astype(image.get_data_dtype()), image.affine)
        return
    suffix = ".nii.gz" if path.name.endswith(".gz") else ".nii"
    with atomic_path(path, suffix=suffix) as tmp:
        if suffix == ".nii.gz":
            buffer = io.BytesIO()
            file_map = nib.Nifti1Image.make_file_map({"image": buffer})
            image.to_file_map(file_map)
            # level 1: label maps compress well and writing stays fast
            tmp.write_bytes(isal.igzip.compress(buffer.getvalue(), compresslevel=1))
        else:
            nib.save(image, tmp)


def write_label(
    path: StrPath,
    data: NDArray[np.integer],
    *,
    affine: NDArray[np.floating],
    header: nib.Nifti1Header | None = None,
) -> None:
    """Write a label volume as uint8 NIfTI, atomically.

    Parameters
    ----------
    path
        ``.nii.gz`` (gzip), ``.nii``, or ``.mha`` / ``.nrrd`` (compressed, through SimpleITK).
    data
        Integer labels 0..255, shape (X, Y, Z).
    affine
        4x4 voxel-to-world matrix; the spacing is taken from it.
    header
        Optional header to copy metadata from (its data type is replaced by uint8).

    Raises
    ------
    InputError
        When ``data`` is not 3D or holds values outside 0..255.
    """
    array = np.asarray(data)
    if array.ndim != 3:
        raise InputError(f"{path}: label data must be 3D, got shape {array.shape}")
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise InputError(f"{path}: labels must lie in 0..255, got {array.min()}..{array.max()}")
        array = array.astype(np.uint8)
    image = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64), header=header)
    image.set_data_dtype(np.uint8)
    image.header.set_slope_inter(1.0, 0.0)
    _atomic_save(image, Path(path))


def write_image(
    path: StrPath, data: NDArray[np.generic], *, affine: NDArray[np.floating]
) -> None:
    """Write an image volume (any numeric dtype) as NIfTI, atomically."""
    image = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64))
    _atomic_save(image, Path(path))
