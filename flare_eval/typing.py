"""Type aliases shared across flare-eval."""

from __future__ import annotations

from os import PathLike
from typing import Union

import numpy as np
from numpy.typing import NDArray

__all__ = ["LabelArray", "BoolArray", "FloatArray", "Spacing", "PathLike", "StrPath"]

#: A label volume: integer class ids per voxel, shape (X, Y, Z) in stored voxel order.
LabelArray = NDArray[np.integer]
#: A binary mask, shape (X, Y, Z).
BoolArray = NDArray[np.bool_]
FloatArray = NDArray[np.floating]
#: Voxel spacing in millimetres, one value per array axis.
Spacing = tuple[float, float, float]
StrPath = Union[str, "PathLike[str]"]
