import math

import pandas as pd
import pytest

from fakes import HEADLINE, summary_row, summary_table
from medtransfer.reporting.summary import TIED, published, summary_cells, with_published, write_summary
from medtransfer.results import write_rows


def test_published_numbers_are_in_the_tables_vocabulary():
    ref = published()
    assert set(ref["protocol"]) == {"fewshot", "linear", "finetune"}
    assert not ref.duplicated(["model", "dataset", "protocol", "setting", "metric"]).any()
    cell = ref[(ref["model"] == "supervised") & (ref["dataset"] == "diabetic_retinopathy")
               & (ref["protocol"] == "linear")]
    assert cell["metric"].tolist() == ["balanced_accuracy"] and cell["value"].tolist() == [pytest.approx(0.3146)]


def test_published_join_lines_up_with_the_right_cells(tmp_path):
    cells = summary_cells(pd.read_csv(summary_table(tmp_path)), HEADLINE)
    joined = with_published(cells).set_index(["model", "dataset", "protocol", "setting"])
    # linear chexpert accuracy and linear diabetic_retinopathy mean per-class accuracy, as published
    assert joined.loc[("supervised", "chexpert", "linear", "manyshot"), "published"] == pytest.approx(0.7347)
    assert joined.loc[("moco-v2", "chexpert", "linear", "manyshot"), "published"] == pytest.approx(0.7494)
    assert joined.loc[("pirl", "diabetic_retinopathy", "linear", "manyshot"), "published"] == pytest.approx(0.3151)
    assert joined.loc[("supervised", "chexpert", "linear", "manyshot"), "difference"] == pytest.approx(0.75 - 0.7347)
    # the few-shot 20-shot cell is published for chexpert too (2-way)
    assert joined.loc[("supervised", "chexpert", "fewshot", "20shot"), "published"] == pytest.approx(0.5614)
    assert len(joined) == 7


def test_summary_marks_best_ties_and_ranks(tmp_path):
    cells = summary_cells(pd.read_csv(summary_table(tmp_path)), HEADLINE).set_index(["protocol", "dataset", "model"])
    linear = cells.loc["linear"]
    assert linear.loc[("chexpert", "supervised"), "best"] and not linear.loc[("chexpert", "moco-v2"), "best"]
    assert linear.loc[("chexpert", "moco-v2"), "tied"] is True and linear.loc[("chexpert", "pirl"), "tied"] is False
    assert linear.loc[("diabetic_retinopathy", "moco-v2"), "best"]
    assert linear.loc[("diabetic_retinopathy", "supervised"), "rank"] == 3
    assert math.isnan(cells.loc[("fewshot", "chexpert", "supervised"), "tied"])  # no comparison rows


def test_summary_markdown_and_latex(tmp_path):
    md, tex, csv = tmp_path / "s.md", tmp_path / "s.tex", tmp_path / "s.csv"
    write_summary(table=summary_table(tmp_path), markdown=md, latex=tex, cells_csv=csv, headline=HEADLINE, study="t", html=tmp_path / "s.html")
    text = md.read_text()
    assert "## Linear probe: headline metric" in text and "## Linear probe: AUROC" in text
    line = next(x for x in text.splitlines() if x.startswith("| moco-v2") and "74.0" in x)
    assert f"74.0 [72.0, 76.0]{TIED}" in line and "**35.0 [33.0, 37.0]**" in line
    assert "| pirl" in text and f"60.0 [58.0, 62.0]{TIED}" not in text
    published_rows = [[c.strip() for c in x.strip("|").split("|")] for x in text.split("## Published numbers")[1]
                      .splitlines() if x.startswith("| supervised")]
    assert ["supervised", "chexpert", "linear", "manyshot", "accuracy", "75", "73.47", "", "1.53"] in published_rows
    assert "nothing to compare with" not in text
    latex = tex.read_text()
    assert latex.count("\\begin{table}") == 4 and "\\textbf{75.0 [73.0, 77.0]}" in latex
    assert "diabetic\\_retinopathy" in latex and "$^{\\dagger}$" in latex
    assert set(pd.read_csv(csv)["table"]) == {"headline", "auroc"}
    page = (tmp_path / "s.html").read_text()
    assert page.count("<table") == 4 and "<b>75.0 [73.0, 77.0]</b>" in page and "&dagger;" in page


def test_a_study_without_published_cells_says_so(tmp_path):
    rows = [summary_row(m, "demo_cxr", "accuracy", v) for m, v in (("supervised", 0.5), ("pirl", 0.6))]
    write_rows(rows, tmp_path / "t.csv")
    write_summary(table=tmp_path / "t.csv", markdown=tmp_path / "s.md", latex=tmp_path / "s.tex",
                  cells_csv=tmp_path / "s.csv", headline={"demo_cxr": "accuracy"})
    assert "nothing to compare with" in (tmp_path / "s.md").read_text()


def test_summary_says_which_transforms_were_left_out_and_which_rows_are_invariant_by_preprocessing(tmp_path):
    rows = pd.read_csv(summary_table(tmp_path)).to_dict("records")
    note = "per-image histogram equalisation undoes this monotone grey-value map"
    rows += [summary_row("mimic-chexpert_lr_0.1", "chexpert", "cosine", 0.999, protocol="invariance",
                         setting=t, invariant_by_preprocessing=note) for t in ("brightness", "contrast")]
    rows += [summary_row(m, "chexpert", "cosine", 0.6, protocol="invariance", setting=t)
             for m, t in (("mimic-chexpert_lr_0.1", "rotation"), ("supervised", "brightness"))]
    write_rows(rows, tmp_path / "table.csv")
    paths = {k: tmp_path / f"s.{k}" for k in ("md", "tex", "html")}
    write_summary(table=tmp_path / "table.csv", markdown=paths["md"], latex=paths["tex"], cells_csv=tmp_path / "c.csv",
                  headline=HEADLINE, html=paths["html"], left_out={"chexpert": ["hue"], "stoic": ["hue"]})
    notes = paths["md"].read_text().split("## Invariance notes")[1]
    assert "Colour transforms left out" in notes and "chexpert: hue; stoic: hue" in notes
    assert "Invariant by preprocessing" in notes and "mimic-chexpert_lr_0.1 on chexpert: brightness, contrast." in notes
    assert "rotation" not in notes and "supervised" not in notes
    assert "mimic-chexpert\\_lr\\_0.1 on chexpert: brightness, contrast" in paths["tex"].read_text()
    assert "<h2>Invariance notes</h2>" in paths["html"].read_text()
    write_summary(table=summary_table(tmp_path), markdown=paths["md"], latex=paths["tex"], cells_csv=tmp_path / "c.csv",
                  headline=HEADLINE)
    assert "Invariance notes" not in paths["md"].read_text()  # nothing to note: no section
