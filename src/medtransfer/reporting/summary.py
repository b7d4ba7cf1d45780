"""The study's answer on one page: summary tables (Markdown and LaTeX) and the published numbers.

Per transfer protocol, a model x dataset table of the headline metric (each dataset's own,
e.g. mean per-class accuracy for diabetic_retinopathy, where the protocol reports it) with
its 95% CI, the best per column in bold, the models the paired comparison does not
separate from the best marked with a dagger, and each model's average rank; then the
same for AUROC. Everything is read from ``reports/table.csv`` (nothing is recomputed):
the marks come from the ``<metric>_diff_vs_best`` rows (``compare.py``, Holm-corrected).

Published values (``published/anton2022.csv``, see its README) are joined on
(model, dataset, protocol, setting, metric) and shown beside ours with the difference.
Notes on the invariance rows follow: the colour transforms left out for grey datasets,
and the (model, transform) rows marked invariant by the model's preprocessing.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer import protocols as registry
from medtransfer.results import details
from medtransfer.writers import write_bytes, write_csv

# Package data, found like the schema (medtransfer.config.SCHEMA): checkout, editable install, wheel.
PUBLISHED = Path(importlib.resources.files("medtransfer.reporting") / "published" / "anton2022.csv")
PUBLISHED_SOURCE = "Anton et al., J. Imaging 2022 (results tables; code release results/full_data.csv)"
JOIN = ["model", "dataset", "protocol", "setting", "metric"]
TIED = "\u2020"  # the dagger: not significantly different from the best
SECOND_METRIC = "auroc"


def published() -> pd.DataFrame:
    """The published numbers with ``value`` and ``ci95`` as fractions, like the table's."""
    frame = pd.read_csv(PUBLISHED)
    return frame.assign(value=frame["value_percent"] / 100.0, ci95=frame["ci95_percent"] / 100.0)


def summary_cells(table: pd.DataFrame, headline: Mapping[str, str], second: bool = False) -> pd.DataFrame:
    """One row per (protocol, dataset, setting, model) of the headline metric (or AUROC with ``second``).

    Columns: the key and value columns, ``best`` (bold), ``tied`` (True: the paired comparison
    does not separate it from the best; NaN where no comparison of this metric exists) and
    ``rank`` (1 = best within the column, ties averaged).
    """
    parts = []
    for protocol in [p for p in registry.transfer_protocols() if p in set(table["protocol"])]:
        spec = registry.get(protocol)
        for dataset in sorted(set(table.loc[table["protocol"] == protocol, "dataset"])):
            metric = SECOND_METRIC if second else spec.compared_metric(headline.get(dataset, "accuracy"))
            if metric not in spec.metrics:
                continue
            rows = table[(table["protocol"] == protocol) & (table["dataset"] == dataset)]
            for setting, part in rows.groupby("setting", sort=False):
                parts.append(_column(part, protocol, dataset, str(setting), metric, spec.better(metric)))
    columns = JOIN + ["value", "ci_low", "ci_high", "best", "tied", "rank"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def _column(part: pd.DataFrame, protocol: str, dataset: str, setting: str, metric: str, better: int) -> pd.DataFrame:
    cells = part[part["metric"] == metric].sort_values("model").copy()
    diffs = part[part["metric"] == f"{metric}_diff_vs_best"].set_index("model")
    compared = {m: details(r) for m, r in diffs.iterrows()}
    best = next(iter(compared.values()))["best"] if compared else None
    if best is None and cells["value"].notna().any():
        best = cells.loc[(better * cells["value"]).idxmax(), "model"]
    cells["best"] = cells["model"] == best
    cells["tied"] = [np.nan if m not in compared else (m != best and not compared[m]["differs"])
                     for m in cells["model"]]
    cells["rank"] = (better * cells["value"]).rank(ascending=False, method="average")
    return cells.assign(protocol=protocol, dataset=dataset, setting=setting, metric=metric)


def with_published(cells: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """The cells a published value exists for, with ``published`` and ``difference`` (ours - published)."""
    reference = published() if reference is None else reference
    joined = cells.merge(reference[JOIN + ["value", "ci95"]].rename(columns={"value": "published"}), on=JOIN)
    return joined.assign(difference=joined["value"] - joined["published"])


def _label(dataset: str, setting: str, metric: str, several: bool) -> str:
    return f"{dataset} ({setting})" + f": {metric}" if several else f"{dataset}: {metric}"


def _cell(row: pd.Series, bold: tuple[str, str], mark: str) -> str:
    if not np.isfinite(row["value"]):
        return "n/a"
    text = f"{100 * row['value']:.1f}"
    if np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"]):
        text += f" [{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}]"
    if row["best"]:
        text = f"{bold[0]}{text}{bold[1]}"
    return text + (mark if _true(row["tied"]) else "")


def _true(value) -> bool:
    """True for a boolean True (``tied`` is NaN where no comparison exists)."""
    return isinstance(value, (bool, np.bool_)) and bool(value)


MARKUP = {"markdown": (("**", "**"), TIED), "latex": (("\\textbf{", "}"), "$^{\\dagger}$"),
          "html": (("<b>", "</b>"), "&dagger;")}


def protocol_grid(cells: pd.DataFrame, protocol: str, markup: str = "markdown") -> pd.DataFrame:
    """The model x column table of one protocol as display strings (``MARKUP``), with the average rank."""
    part = cells[cells["protocol"] == protocol].copy()
    several = bool((part.groupby("dataset")["setting"].nunique() > 1).any())
    part["column"] = [_label(d, s, m, several) for d, s, m in part[["dataset", "setting", "metric"]].to_numpy()]
    bold, mark = MARKUP[markup]
    part["text"] = [_cell(r, bold, mark) for _, r in part.iterrows()]
    grid = part.pivot(index="model", columns="column", values="text").fillna("")
    grid["average rank"] = part.groupby("model")["rank"].mean().map("{:.2f}".format)
    grid = grid.sort_values("average rank", key=lambda s: s.astype(float), kind="stable")
    if markup == "latex":
        grid.index = [_tex(str(i)) for i in grid.index]
        grid.columns = [_tex(str(c)) for c in grid.columns]
    grid.index.name = "model"
    grid.columns.name = None
    return grid


def _tex(text: str) -> str:
    return text.replace("_", "\\_").replace("%", "\\%")


def _published_frame(cells: pd.DataFrame, reference: pd.DataFrame | None) -> pd.DataFrame:
    joined = with_published(cells, reference)
    out = joined[JOIN].copy()
    out["ours (%)"] = (100 * joined["value"]).round(2)
    out["published (%)"] = (100 * joined["published"]).round(2)
    out["published CI95 +- (%)"] = (100 * joined["ci95"]).round(2)
    out["difference (points)"] = (100 * joined["difference"]).round(2)
    return out


LEFT_OUT = ("Colour transforms left out (a colour-only transform leaves a grey image unchanged, so every "
            "model would score about 1): {items}.")
BY_PREPROCESSING = ("Invariant by preprocessing (the model equalises each image's histogram, which undoes a "
                    "monotone grey-value map: its cosine is about 1 by construction, whatever its features): {items}.")


def invariance_notes(table: pd.DataFrame, left_out: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """Sentences on the invariance rows: transforms left out per grey dataset (``left_out``:
    dataset -> transforms), and the rows whose details mark them ``invariant_by_preprocessing``."""
    notes = []
    if left_out:
        notes.append(LEFT_OUT.format(items="; ".join(f"{d}: {', '.join(t)}" for d, t in sorted(left_out.items()))))
    rows = table[table["protocol"] == "invariance"] if "protocol" in table else table.iloc[:0]
    marked = sorted({(m, d, t) for m, d, t, text in rows[["model", "dataset", "setting", "details"]].to_numpy()
                     if details(text).get("invariant_by_preprocessing")})
    if marked:
        grouped: dict[tuple[str, str], list[str]] = {}
        for model, dataset, transform in marked:
            grouped.setdefault((model, dataset), []).append(transform)
        notes.append(BY_PREPROCESSING.format(
            items="; ".join(f"{m} on {d}: {', '.join(t)}" for (m, d), t in grouped.items())))
    return notes


def write_summary(*, table: str | os.PathLike, markdown: str | os.PathLike, latex: str | os.PathLike,
                  cells_csv: str | os.PathLike, headline: Mapping[str, str], study: str = "",
                  html: str | os.PathLike | None = None, reference: pd.DataFrame | None = None,
                  left_out: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Write the summary tables of ``table`` as Markdown, LaTeX (and HTML) and the tidy cells as CSV.

    ``left_out``: dataset -> the invariance transforms it does not get (its images are grey).
    """
    frame = pd.read_csv(table)
    notes = invariance_notes(frame, left_out)
    cells = summary_cells(frame, headline)
    second = summary_cells(frame, headline, second=True)
    both = pd.concat([cells.assign(table="headline"), second.assign(table=SECOND_METRIC)], ignore_index=True)
    write_csv(cells_csv, both)
    demo = bool(frame["weights_demo"].astype(bool).any())
    comparison = _published_frame(pd.concat([cells, second], ignore_index=True), reference)
    write_bytes(markdown, _markdown(cells, second, comparison, study, demo, notes).encode())
    write_bytes(latex, _latex(cells, second, comparison, study, demo, notes).encode())
    if html is not None:
        write_bytes(html, _html(cells, second, comparison, study, demo, notes).encode())
    return both


LEGEND = ("Values in percent with the 95% CI in brackets; **bold**: the best per column; "
          f"{TIED}: not significantly different from the best (paired comparison, Holm-corrected p at least 0.05); "
          "average rank over the columns (1 = best).")
SECOND_LEGEND = ("AUROC in percent with the 95% CI; **bold**: the best per column; the paired comparison "
                 "is run on the headline metric only, so this table carries no significance marks.")
NO_PUBLISHED = ("This study evaluates no (model, dataset, protocol) cell that the published study reports, "
                "so there is nothing to compare with: the published numbers are for the real datasets and "
                "weights ({source}).")
DEMO = ("DEMO study: random weights on synthetic images. These numbers exercise the workflow and mean "
        "nothing about the models.")


def _sections(cells: pd.DataFrame, second: pd.DataFrame):
    """(title, cells, protocol, legend) of every table, headline tables first."""
    for frame, what, legend in ((cells, "headline metric", LEGEND), (second, "AUROC", SECOND_LEGEND)):
        for protocol in dict.fromkeys(frame["protocol"]):
            yield f"{registry.get(protocol).title}: {what}", frame, protocol, legend


NOTES_TITLE = "Invariance notes"


def _markdown(cells, second, comparison, study, demo, notes=()) -> str:
    out = [f"# Summary of the {study or 'study'} study", ""]
    if demo:
        out += [f"> {DEMO}", ""]
    for title, frame, protocol, legend in _sections(cells, second):
        out += [f"## {title}", "", protocol_grid(frame, protocol).to_markdown(), "", legend, ""]
    out += ["## Published numbers", ""]
    if comparison.empty:
        out += [NO_PUBLISHED.format(source=PUBLISHED_SOURCE), ""]
    else:
        out += [f"Published: {PUBLISHED_SOURCE}; difference = ours - published, in percentage points.", "",
                comparison.astype(object).where(comparison.notna(), None).to_markdown(index=False, missingval=""), ""]
    if notes:
        out += [f"## {NOTES_TITLE}", "", *[f"- {note}" for note in notes], ""]
    return "\n".join(out)


def _latex(cells, second, comparison, study, demo, notes=()) -> str:
    out = [f"% Summary of the {_tex(study or 'study')} study, written by medtransfer.reporting.summary", ""]
    if demo:
        out += [f"\\paragraph{{}} {DEMO}", ""]
    for title, frame, protocol, legend in _sections(cells, second):
        grid = protocol_grid(frame, protocol, "latex")
        tex_legend = _tex(legend).replace("**bold**", "\\textbf{bold}").replace(TIED, "$^{\\dagger}$")
        out += [grid.to_latex(escape=False, caption=f"{_tex(title)}. {tex_legend}",
                              label=f"tab:{protocol}-{'auroc' if frame is second else 'headline'}"), ""]
    if comparison.empty:
        out += [f"% {NO_PUBLISHED.format(source=PUBLISHED_SOURCE)}", ""]
    else:
        shown = comparison.copy()
        for column in JOIN:
            shown[column] = shown[column].map(_tex)
        shown.columns = [_tex(c) for c in shown.columns]
        out += [shown.to_latex(index=False, escape=False, float_format="%.2f", na_rep="",
                               caption=f"Published numbers ({_tex(PUBLISHED_SOURCE)}) beside ours.",
                               label="tab:published"), ""]
    if notes:
        out += [f"\\paragraph{{{NOTES_TITLE}}}", "\n\n".join(_tex(note) for note in notes), ""]
    return "\n".join(out)


STYLE = ("body{font-family:sans-serif;margin:1.5em;color:#222} table{border-collapse:collapse;margin:.5em 0}"
         "td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right} th{background:#eee}"
         ".demo{background:#fff3cd;padding:.5em;border-left:4px solid #E69F00} p.legend{font-size:90%;color:#555}")


def _html(cells, second, comparison, study, demo, notes=()) -> str:
    title = f"Summary of the {escape(study or 'study')} study"
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
           f"<style>{STYLE}</style></head><body><h1>{title}</h1>"]
    if demo:
        out.append(f"<p class='demo'>{escape(DEMO)}</p>")
    for name, frame, protocol, legend in _sections(cells, second):
        grid = protocol_grid(frame, protocol, "html")
        out += [f"<h2>{escape(name)}</h2>", grid.reset_index().to_html(escape=False, border=0, index=False),
                f"<p class='legend'>{escape(legend).replace('**bold**', '<b>bold</b>')}</p>"]
    out.append("<h2>Published numbers</h2>")
    if comparison.empty:
        out.append(f"<p>{escape(NO_PUBLISHED.format(source=PUBLISHED_SOURCE))}</p>")
    else:
        out += [f"<p>Published: {escape(PUBLISHED_SOURCE)}; difference = ours - published, in percentage points.</p>",
                comparison.to_html(index=False, na_rep="", border=0)]
    if notes:
        out += [f"<h2>{NOTES_TITLE}</h2>", "<ul>", *[f"<li>{escape(note)}</li>" for note in notes], "</ul>"]
    return "\n".join(out + ["</body></html>"]) + "\n"
