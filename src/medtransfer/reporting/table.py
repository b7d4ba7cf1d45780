"""The study's tidy table: every row file concatenated, nothing recomputed."""

from __future__ import annotations

import os
from collections.abc import Iterable

import pandas as pd

from medtransfer.results import KEY_COLUMNS, read_rows
from medtransfer.writers import write_csv


def write_table(*, rows: Iterable[str | os.PathLike], out: str | os.PathLike) -> pd.DataFrame:
    """Concatenate row files into ``out``, sorted by the key columns (deterministic)."""
    table = read_rows(rows).sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)
    write_csv(out, table)
    return table
