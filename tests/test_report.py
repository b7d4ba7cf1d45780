import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakes import HEADLINE, summary_table
from medtransfer.reporting.figures import plot_bars, plot_protocol, plot_radar
from medtransfer.reporting.summary import write_summary
from medtransfer.reporting.table import write_table
from medtransfer.results import RESULT_COLUMNS, make_row, write_rows

META = {"weights_sha256": "a" * 64, "weights_demo": True, "split": "given", "precision": "fp32",
        "preprocessing": "p"}


def _rows(tmp_path, model, value, protocol="linear", setting="manyshot"):
    row = make_row(model=model, dataset="d", protocol=protocol, setting=setting, metric="accuracy",
                   value=value, n=10, seed=0, meta=META)
    path = tmp_path / f"{model}-{protocol}-{setting}.csv"
    write_rows([row], path)
    return path


def test_table_only_concatenates_in_a_stable_order(tmp_path):
    files = [_rows(tmp_path, "b", 0.5), _rows(tmp_path, "a", 0.7)]
    table = write_table(rows=files, out=tmp_path / "t.csv")
    assert list(table.columns) == RESULT_COLUMNS and list(table["model"]) == ["a", "b"]
    assert write_table(rows=files[::-1], out=tmp_path / "u.csv").equals(table)
    assert pd.read_csv(tmp_path / "t.csv")["value"].tolist() == [0.7, 0.5]


def test_rows_without_provenance_are_refused(tmp_path):
    with pytest.raises(ValueError, match="lack columns.*make_row"):
        write_rows([{"model": "a", "value": 1.0}], tmp_path / "x.csv")


def test_figure_has_one_column_per_dataset_setting(tmp_path):
    files = [_rows(tmp_path, m, v, "fewshot", s) for m, v in (("a", 0.6), ("b", 0.8))
             for s in ("5shot", "20shot")]
    write_table(rows=files, out=tmp_path / "t.csv")
    plot_protocol(table=tmp_path / "t.csv", out=tmp_path / "f.png", protocol="fewshot")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no 'accuracy' rows for protocol 'finetune'"):
        plot_protocol(table=tmp_path / "t.csv", out=tmp_path / "g.png", protocol="finetune")
    assert not (tmp_path / "g.png").exists()


def _not_blank(png):
    pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
    return pixels.std() > 5


def test_bars_and_radar_from_the_summary_cells(tmp_path):
    write_summary(table=summary_table(tmp_path), markdown=tmp_path / "s.md", latex=tmp_path / "s.tex",
                  cells_csv=tmp_path / "cells.csv", headline=HEADLINE)
    plot_bars(cells=tmp_path / "cells.csv", png=tmp_path / "b.png", pdf=tmp_path / "b.pdf", protocol="linear")
    plot_radar(cells=tmp_path / "cells.csv", png=tmp_path / "r.png", pdf=tmp_path / "r.pdf", model="pirl")
    for name in ("b", "r"):
        assert _not_blank(tmp_path / f"{name}.png") and (tmp_path / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
    with pytest.raises(ValueError, match="no cells for model 'byol'"):
        plot_radar(cells=tmp_path / "cells.csv", png=tmp_path / "x.png", pdf=tmp_path / "x.pdf", model="byol")
