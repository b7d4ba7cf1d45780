"""Conversion of a published weights source to one canonical torchvision-layout file.

The format's record (``formats.FORMATS``) converts the source: keys mapped *by name*, every
dropped key listed with its reason. ``convert_file`` then checks every key and shape against
the target architecture (strict), takes padding and default normalisation from the record
and writes the canonical file atomically. When the source turns out to be another format,
the error says which one (from what ``inspect`` detects) and what to set.
"""

from __future__ import annotations

import os
from pathlib import Path

from medtransfer.weights.backbones import WeightsMeta, check_state_dict, save_weights
from medtransfer.weights.base import Converted
from medtransfer.weights.formats import FORMATS, NORMALISATIONS, FormatRecord, get_format
from medtransfer.weights.inspect import detect
from medtransfer.weights.sources import source_sha256

__all__ = ["FORMATS", "Converted", "convert_file", "wrong_format_error"]


def _first_line(err: Exception, src: Path, limit: int = 160) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = text.removeprefix(f"{src}: ")
    return text if len(text) <= limit else text[:limit] + "..."


def wrong_format_error(src: Path, fmt: str, err: Exception) -> ValueError | None:
    """A short error naming the format ``src`` looks like, when that is not ``fmt`` (else None)."""
    try:
        likely, info = detect(src)
    except (ValueError, OSError):
        return None
    if likely is None or likely == fmt:
        return None
    shown = f"{info['count']} keys, e.g. {info['keys']}" if "keys" in info else info.get("container", "?")
    return ValueError(
        f"{src}: cannot convert it as format `{fmt}` ({_first_line(err, src)}). It looks like format "
        f"`{likely}`, {FORMATS[likely].summary}: {shown}. Set `format: {likely}` for this model in "
        f"the config (command line: --format {likely})."
    )


def _convert_checked(record: FormatRecord, src: Path, arch: str) -> Converted:
    try:
        converted = record.convert(src)
        check_state_dict(converted.state_dict, arch, str(src))
    except ValueError as err:
        better = wrong_format_error(src, record.name, err)
        if better is None:
            raise
        raise better from err
    return converted


def _check_settings(record: FormatRecord, normalisation: str, arch: str) -> None:
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}; expected one of {sorted(NORMALISATIONS)}")
    if arch not in record.archs:
        raise ValueError(f"arch {arch!r} is not one format `{record.name}` can hold; expected one of {record.archs}")


def convert_file(
    src: str | os.PathLike, out: str | os.PathLike, *, fmt: str, model: str = "",
    normalisation: str | None = None, arch: str = "resnet50", demo: bool = False, random: bool = False,
) -> WeightsMeta:
    """Convert the source ``src`` (format ``fmt``) to the canonical weights file ``out``.

    ``src`` is a file, or for ``simclr_tf`` also a checkpoint folder, prefix or ``.index``
    (``sources.source_files``). ``normalisation`` None means the format's default.
    """
    record = get_format(fmt)
    normalisation = normalisation or record.normalisation
    _check_settings(record, normalisation, arch)
    src = Path(src)
    sha256 = source_sha256(src)
    converted = _convert_checked(record, src, arch)
    norm = NORMALISATIONS[normalisation]
    meta = WeightsMeta(
        arch=arch, padding=record.padding, mean=norm.mean, std=norm.std, normalisation=normalisation, source_format=fmt,
        source_sha256=sha256, model=model, dropped=converted.dropped, demo=demo, random=random,
    )
    save_weights(out, converted.state_dict, meta)
    return meta
