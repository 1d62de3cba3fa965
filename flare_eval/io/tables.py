"""Atomic writes of text and tables: a reader never sees a half-written file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flare_eval.io.atomic import atomic_path
from flare_eval.typing import StrPath

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["atomic_write_text", "finite_json", "write_finite_json", "write_table"]


def atomic_write_text(path: StrPath, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def write_table(table: pd.DataFrame, path: StrPath, *, float_format: str | None = None) -> None:
    """Write a DataFrame atomically as CSV (``.csv``) or Parquet (``.parquet``, needs pyarrow)."""
    if Path(path).suffix == ".parquet":
        with atomic_path(path) as tmp:
            table.to_parquet(tmp, index=False)
    else:
        atomic_write_text(path, table.to_csv(index=False, float_format=float_format))


def finite_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float (also inside dicts and lists) replaced by None.

    For the platforms' score files: JSON has no NaN, and a leaderboard that reads ``NaN`` either
    fails or drops the submission; ``null`` says "undefined" in valid JSON.

    Examples
    --------
    >>> finite_json({"a": float("nan"), "b": [1.0, float("inf")], "c": 2})
    {'a': None, 'b': [1.0, None], 'c': 2}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    return value


def write_finite_json(path: StrPath, value: Any) -> None:
    """Write ``finite_json(value)`` as strict JSON (``allow_nan=False``), atomically."""
    atomic_write_text(path, json.dumps(finite_json(value), indent=1, allow_nan=False) + "\n")
