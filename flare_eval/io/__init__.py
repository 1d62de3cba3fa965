"""Reading and writing volumes and tables: NIfTI via nibabel + ISA-L, atomic table writes."""

from __future__ import annotations

from flare_eval.io.atomic import atomic_path
from flare_eval.io.nifti import (
    ImageVolume,
    LabelVolume,
    LabelWarning,
    ReadWarning,
    ShapeMismatch,
    read_image,
    read_label,
    write_image,
    write_label,
)
from flare_eval.io.tables import atomic_write_text, finite_json, write_finite_json, write_table

__all__ = [
    "ImageVolume",
    "LabelVolume",
    "LabelWarning",
    "ReadWarning",
    "ShapeMismatch",
    "read_image",
    "read_label",
    "write_image",
    "write_label",
    "atomic_path",
    "atomic_write_text",
    "finite_json",
    "write_finite_json",
    "write_table",
]
