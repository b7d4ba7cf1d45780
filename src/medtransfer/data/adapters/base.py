"""What every dataset adapter shares: the record, its options, the scanning helpers, the errors.

A family module (chest, fundus, histology, generic) defines each kind's scanner next to its
``Adapter`` record; the package's ``__init__`` registers the records in ``ADAPTERS``, which
``describe`` reads, so every layout error here can quote the kind's download and layout.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtransfer.data.index import PUBLISHED_SEED, published_split, read_table

log = logging.getLogger(__name__)

SHOW = 3  # how many offending names an error message quotes


@dataclass(frozen=True)
class Option:
    """One adapter option: ``allowed`` lists the values, or ``check`` validates free ones."""

    default: Any
    doc: str
    allowed: tuple[Any, ...] | None = None
    check: Callable[[Any], bool] | None = None
    expects: str = ""


@dataclass(frozen=True)
class Adapter:
    """A dataset key's metadata and the function that scans a download into rows.

    ``scan(root, options)`` returns columns ``path, label, label_name, patient, keep``
    (and ``split`` when the data has its own), rows in the order the published code
    shuffled; ``keep`` is False for rows the label rule drops after the published split.
    ``published(frame, options)`` returns the published split of all rows and its rule.

    Facts of the kind that other modules read instead of keeping their own list:
    ``multiview``: the index carries ``view_group`` and ``view`` (the invariance protocol's
    multi-view pairs); ``typical_images``: the documented number of images (docs/datasets.md;
    ChestX-ray14: the rows kept after the label filter), the size of a job before its index
    exists and of a cost estimate for data not on this machine, 0 where there is none (users'
    data; a demo dataset's size is its config's ``n_images``); ``colour``: the images are colour
    photographs (False: grey-scale radiographs or CT; users' data, kinds csv and imagefolder,
    says so in its config's ``colour``, default true). ``cache.decode`` makes every image RGB
    either way; the cache rules check the fact against the decoded images, and grey datasets
    get no colour-only invariance transform.
    """

    kind: str
    title: str
    classes: tuple[str, ...]
    source: str
    licence: str
    layout: str
    label_rule: str
    published_rule: str
    patient_rule: str
    scan: Callable[[Path, dict[str, Any]], pd.DataFrame]
    published: Callable[[pd.DataFrame, dict[str, Any]], tuple[np.ndarray, str]]
    options: dict[str, Option] = field(default_factory=dict)
    option_classes: dict[str, dict[Any, tuple[str, ...]]] = field(default_factory=dict)
    has_patients: bool = False
    has_given_split: bool = False
    listed_in: str | None = None  # the file that lists images: check they exist
    from_csv: bool = False  # indexed by index.index_from_csv (users' CSV, the demo datasets)
    multiview: bool = False
    typical_images: int = 0
    colour: bool = True

    def class_names(self, options: dict[str, Any] | None = None) -> tuple[str, ...]:
        """Class names in label order under ``options`` (empty: taken from the data)."""
        if not self.option_classes:
            return self.classes
        (name, table), = self.option_classes.items()  # one option picks the class names
        return table[(options or {}).get(name, self.options[name].default)]

    def resolve_options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults filled in; an unknown name or a bad value is an error listing the allowed."""
        given = dict(options or {})
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            takes = ", ".join(sorted(self.options)) or "no options"
            raise ValueError(f"{self.kind}: unknown option(s) {unknown}; {self.kind} takes {takes}. "
                             f"Fix the dataset's options in the config.")
        return {name: _check_option(self.kind, name, opt, given.get(name, opt.default))
                for name, opt in self.options.items()}


def _check_option(kind: str, name: str, opt: Option, value: Any) -> Any:
    if opt.allowed is not None and (value not in opt.allowed or type(value) is not type(opt.default)):
        raise ValueError(f"{kind}: option {name}={value!r} is not allowed; use one of "
                         f"{list(opt.allowed)} (default {opt.default!r})")
    if opt.check is not None and not opt.check(value):
        raise ValueError(f"{kind}: option {name}={value!r} is not valid; expected {opt.expects}")
    return value


#: Every dataset kind's record, in the order users see them (``python -m medtransfer.data
#: describe``). Filled by ``medtransfer.data.adapters`` from the family modules, which import
#: this module: the registry lives here so that the errors below can describe a kind.
ADAPTERS: dict[str, Adapter] = {}


def get_adapter(kind: str) -> Adapter:
    if kind not in ADAPTERS:
        raise ValueError(f"unknown dataset kind {kind!r}; use one of {list(ADAPTERS)}")
    return ADAPTERS[kind]


# ---------------------------------------------------------------------------- errors


def describe(kind: str) -> str:
    """Human text for ``kind``: where to download it, the layout expected, labels, splits."""
    a = get_adapter(kind)
    classes = a.class_names()
    lines = [f"{a.kind}: {a.title}", f"  download: {a.source}", f"  licence: {a.licence}",
             "  expected layout under the dataset root:"]
    lines += [f"    {line}" for line in a.layout.strip().splitlines()]
    lines.append("  classes (label order): " + (", ".join(f"{i} {c}" for i, c in enumerate(classes))
                                                 or "taken from the data"))
    lines += [f"  labels: {a.label_rule}", f"  published split: {a.published_rule}",
              f"  patient ids: {a.patient_rule}"]
    for name, opt in a.options.items():
        values = f"; one of {list(opt.allowed)}" if opt.allowed else f"; {opt.expects}"
        lines.append(f"  option {name} (default {opt.default!r}{values}): {opt.doc}")
    return "\n".join(lines)


def _layout_error(kind: str, path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"{kind}: expected {what} {path} does not exist; the download is "
                             f"missing or not in the expected layout.\n{describe(kind)}")


def _need_file(kind: str, path: Path) -> Path:
    if not path.is_file():
        raise _layout_error(kind, path, "file")
    return path


def _need_dir(kind: str, path: Path) -> Path:
    if not path.is_dir():
        raise _layout_error(kind, path, "folder")
    return path


def _unknown_labels(kind: str, where: str | Path, bad: Iterable[Any], allowed: Iterable[Any]) -> ValueError:
    bad = sorted({str(b) for b in bad})
    return ValueError(f"{kind}: unknown label value(s) {bad[:10]} in {where}; expected one of "
                      f"{list(allowed)}. Check that this is the original download.\n{describe(kind)}")


def _first(values: Iterable[Any]) -> list[str]:
    return [str(v) for v in list(values)[:SHOW]]


def _check_nonempty(kind: str, classes: tuple[str, ...] | list[str], labels: pd.Series | list[int],
                    where: str) -> None:
    """Every class of ``classes`` (label order) needs an image among ``labels``."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise ValueError(f"{kind}: class(es) {empty} have no images in {where} after the label rule; "
                         f"every class needs images: check the download is complete.\n{describe(kind)}")


# ---------------------------------------------------------------------------- file helpers


def _list_files(kind: str, folder: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Sorted names of the image files in ``folder`` (hidden files skipped, e.g. macOS ``._x``).

    Other files are left out with a logged warning that names them, never silently.
    """
    _need_dir(kind, folder)
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if e.is_file() and not e.name.startswith("."))
    images = [n for n in names if n.lower().endswith(suffixes)]
    if len(images) < len(names):
        others = [n for n in names if not n.lower().endswith(suffixes)]
        log.warning("%s: %d file(s) in %s are not images (%s) and are left out, e.g. %s",
                    kind, len(others), folder, ", ".join(suffixes), others[:SHOW])
    return images


def _list_dirs(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _missing(paths: pd.Series) -> np.ndarray:
    """Mask of ``paths`` that do not exist: one listing per distinct folder, no per-file stat."""
    parts = paths.str.rpartition(os.sep)
    existing: set[str] = set()
    for folder in parts[0].unique():
        try:
            names = os.listdir(folder or os.curdir)
        except (FileNotFoundError, NotADirectoryError):
            continue
        existing.update(names if not folder else (folder + os.sep + n for n in names))
    return ~paths.isin(existing).to_numpy()


def _check_exist(kind: str, frame: pd.DataFrame, source: str) -> None:
    gone = frame["path"][_missing(frame["path"])]
    if len(gone):
        raise FileNotFoundError(
            f"{kind}: {len(gone)} of {len(frame)} images listed in {source} do not exist, e.g. "
            f"{_first(gone)}; the download is incomplete or not unpacked in the expected layout: "
            f"re-extract it.\n{describe(kind)}")


def _join(folder: Path, names: pd.Series | list[str]) -> pd.Series:
    """Paths as strings, built by vectorised concatenation (no Path object per row)."""
    return str(folder) + os.sep + pd.Series(names, dtype=str).reset_index(drop=True)


def _rows(paths: pd.Series, labels: Any, classes: tuple[str, ...], patient: Any = "") -> pd.DataFrame:
    labels = np.asarray(labels, dtype=int)
    return pd.DataFrame({"path": paths.to_numpy(), "label": labels,
                         "label_name": np.asarray(classes, dtype=object)[labels],
                         "patient": patient, "keep": True})


def _read_table(kind: str, path: Path, expected: str, **kwargs: Any) -> pd.DataFrame:
    """A dataset CSV as strings; missing, empty or unparsable: an error naming the file."""
    try:
        return read_table(_need_file(kind, path), expected, **kwargs)
    except ValueError as err:
        raise ValueError(f"{kind}: {err}\n{describe(kind)}") from err


def _read_csv(kind: str, path: Path, columns: list[str], **kwargs: Any) -> pd.DataFrame:
    """Read the ``columns`` of a dataset CSV as strings; a missing column is a layout error."""
    frame = _read_table(kind, path, f"a header row naming at least the columns {', '.join(columns)}", **kwargs)
    lacking = [c for c in columns if c not in frame.columns]
    if lacking:
        raise ValueError(f"{kind}: {path} lacks column(s) {lacking}; it has {list(frame.columns)[:20]}. "
                         f"Use the original file.\n{describe(kind)}")
    return frame[columns]


def _scan_class_folders(kind: str, parent: Path, classes: tuple[str, ...],
                        suffixes: tuple[str, ...]) -> pd.DataFrame:
    """Rows ``file, label`` for ``parent/<class>/<file>``; an unknown folder is an error."""
    _need_dir(kind, parent)
    unknown = sorted(set(_list_dirs(parent)) - set(classes))
    if unknown:
        raise _unknown_labels(kind, f"the class folders of {parent}", unknown, classes)
    rows = [(name, label) for label, cls in enumerate(classes) if (parent / cls).is_dir()
            for name in _list_files(kind, parent / cls, suffixes)]
    return pd.DataFrame(rows, columns=["file", "label"]).astype({"label": int})


def _stems(files: pd.Series) -> np.ndarray:
    return files.str.rpartition(".")[0].to_numpy()


# ---------------------------------------------------------------------------- published splits


def _published_80_20(frame: pd.DataFrame, options: dict[str, Any]) -> tuple[np.ndarray, str]:
    return published_split(len(frame)), f"published:80/20,seed={PUBLISHED_SEED}"


def _published_given(frame: pd.DataFrame, options: dict[str, Any]) -> tuple[np.ndarray, str]:
    return frame["split"].to_numpy(dtype=object), "published:official_train_test"
