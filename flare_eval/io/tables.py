"""Atomic writes of text and tables: a reader never sees a half-written file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from flare_eval.io.atomic import atomic_path
from flare_eval.typing import StrPath

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["atomic_write_text", "write_table"]


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
