"""Evaluation protocols: the registry (one record per protocol, one place to add one) and,
beside it, one module per protocol (``linear``, ``fewshot``, ``finetune``, ``knn``,
``saliency``, ``invariance``, ``reconstruct/``) and ``shared`` for what several use.

``study`` (targets), ``reporting.compare`` (paired comparisons) and ``reporting.figures``
learn about a protocol from its record here; a protocol's own rule file, script and
module do the work. This module imports nothing heavy: the DAG is built from it.
Adding a protocol is one :func:`register` call plus its rule, script, module, test and
schema entry (see docs/architecture.md).

Vocabulary, used alike in paths, result rows, config keys and code:
- ``protocol``: ``linear``, ``fewshot``, ``finetune``, ``knn``, ...
- ``setting``: which variant of a protocol a result is for: ``manyshot`` for protocols
  trained on the whole training split, ``<k>shot`` for few-shot with k support images
  per class.
- ``pairing``: what two models' results are paired over in a comparison: ``images``
  (predicted probabilities on the same test images; paired bootstrap), ``episodes`` (the
  same stored episodes) or ``values`` (a per-image value of each metric, e.g. a
  reconstruction's LPIPS, on the same images; paired bootstrap of the mean).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from medtransfer.protocols.checks import TRANSFORMS, check_invariance, check_reconstruction, check_saliency, no_check

MANYSHOT = "manyshot"
PAIRINGS = ("images", "episodes", "values")


def _manyshot(settings: Mapping[str, Any]) -> list[str]:
    return [MANYSHOT]


def _shots(settings: Mapping[str, Any]) -> list[str]:
    return [f"{k}shot" for k in settings["n_support"]]


def support_size(setting: str) -> int:
    """The support images per class of a few-shot setting: ``10shot`` -> 10 (inverse of its name)."""
    if not re.fullmatch(r"\d+shot", setting):
        raise ValueError(f"few-shot setting {setting!r} is not <k>shot (e.g. 10shot)")
    return int(setting.removesuffix("shot"))


def _dip(settings: Mapping[str, Any]) -> list[str]:
    return ["dip"]


def _occlusion(settings: Mapping[str, Any]) -> list[str]:
    return ["occlusion"]


# Synthetic transforms of the invariance protocol (TRANSFORMS, one setting each, in that order,
# defined beside their check), and the setting of its multi-view pairs; torch-free, for config
# checks and paths.
#: Transforms that change only an image's colour: on a grey image they do nothing, so grey
#: datasets (``Study.colour``) do not get them.
COLOUR_TRANSFORMS = ("hue",)
#: Transforms that map an image's grey values through a monotone function, which per-image
#: histogram equalisation (``normalisation: histeq``) undoes: such a model is invariant to them
#: by its preprocessing, whatever its features.
MONOTONE_TRANSFORMS = ("brightness", "contrast")
MULTIVIEW = "multiview"


def _transforms(settings: Mapping[str, Any]) -> list[str]:
    return [t for t in TRANSFORMS if t in settings["transforms"]]


def _no_dataset_settings(dataset: Mapping[str, Any]) -> list[str]:
    return []


def _multiview(dataset: Mapping[str, Any]) -> list[str]:
    return [MULTIVIEW] if dataset.get("multiview") else []


@dataclass(frozen=True)
class Protocol:
    """What the rest of the workflow needs to know about one evaluation protocol.

    ``entry`` is the ``module:function`` its rule's script calls with the protocol's
    config section as keywords (a test checks the schema's defaults against its
    signature); ``settings`` maps that section to the protocol's setting names;
    ``metrics`` are the metrics its rows report (the first is compared when a
    dataset's headline metric is not among them), ``lower_is_better`` those of them
    where smaller wins; ``stage`` names its rule file ``workflow/rules/<stage>.smk``
    (the protocol's name unless given); ``dataset_settings`` maps a dataset's config to
    settings that only some datasets have (invariance's multi-view pairs); ``colour_only``
    names settings that only colour datasets get (invariance's colour transforms). ``measures``
    marks a protocol that explains transfer rather than measuring it: pairs of (a metric the
    correlation stage uses, the measure's name, ``{setting}`` filled in); protocols without
    them are transfer protocols, whose scores are explained. ``check`` raises on settings the
    schema cannot check; it is torch-free (``protocols.checks``), called with the protocol's
    config section as keywords when the study is built, so a bad setting fails at DAG build. ``patterns`` are regular
    expressions matching every setting name ``settings`` and ``dataset_settings`` can give
    (the workflow's ``setting`` wildcard is built from them).
    """

    name: str
    title: str
    entry: str
    pairing: str
    metrics: tuple[str, ...]
    settings: Callable[[Mapping[str, Any]], list[str]] = field(default=_manyshot)
    lower_is_better: tuple[str, ...] = ()
    stage: str = ""
    dataset_settings: Callable[[Mapping[str, Any]], list[str]] = field(default=_no_dataset_settings)
    colour_only: tuple[str, ...] = ()
    measures: tuple[tuple[str, str], ...] = ()
    patterns: tuple[str, ...] = (MANYSHOT,)
    check: Callable[..., None] = field(default=no_check)

    @property
    def rule_file(self) -> str:
        return f"workflow/rules/{self.stage or self.name}.smk"

    def compared_metric(self, dataset_metric: str) -> str:
        """The metric compared and ranked: the dataset's headline metric where this protocol
        reports it, else the protocol's first."""
        return dataset_metric if dataset_metric in self.metrics else self.metrics[0]

    def better(self, metric: str) -> int:
        """+1 where a larger value of ``metric`` is better, -1 where a smaller one is."""
        return -1 if metric in self.lower_is_better else 1

    def __post_init__(self) -> None:
        if self.pairing not in PAIRINGS:
            raise ValueError(f"protocol {self.name!r}: pairing {self.pairing!r} is not one of {PAIRINGS}")


PROTOCOLS: dict[str, Protocol] = {}


def register(protocol: Protocol) -> Protocol:
    if protocol.name in PROTOCOLS:
        raise ValueError(f"protocol {protocol.name!r} is registered twice")
    PROTOCOLS[protocol.name] = protocol
    return protocol


def get(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; registered: {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


def setting_pattern() -> str:
    """A regular expression matching every registered protocol's setting names."""
    return "|".join(dict.fromkeys(pattern for p in PROTOCOLS.values() for pattern in p.patterns))


def transfer_protocols() -> list[str]:
    """Protocols whose scores the correlation stage explains (those without ``measures``)."""
    return [name for name, p in PROTOCOLS.items() if not p.measures]


_CLASSIFICATION = ("accuracy", "balanced_accuracy", "auroc")

register(Protocol("linear", "Linear probe", "medtransfer.protocols.linear:evaluate_linear", "images",
                  _CLASSIFICATION))
register(Protocol("fewshot", "Few-shot (prototypical)", "medtransfer.protocols.episodes:sample_episodes", "episodes",
                  ("accuracy",), _shots, patterns=(r"\d+shot",)))
register(Protocol("finetune", "Finetune", "medtransfer.protocols.finetune:evaluate_finetune", "images",
                  _CLASSIFICATION))
register(Protocol("knn", "Weighted kNN", "medtransfer.protocols.knn:evaluate_knn", "images", _CLASSIFICATION))
_LPIPS = ("lpips_mean", "lpips_alex", "lpips_vgg", "lpips_squeeze")
_LPIPS += tuple(f"{m}_model_view" for m in _LPIPS)  # the same between the images as the model sees them
register(Protocol("reconstruction", "Reconstruction (DIP feature inversion)",
                  "medtransfer.protocols.reconstruct:invert", "values",
                  _LPIPS + ("psnr", "ssim", "psnr_model_view", "ssim_model_view"), _dip,
                  lower_is_better=_LPIPS, stage="reconstruct", patterns=("dip",),
                  measures=tuple((m, m) for m in ("lpips_mean", "lpips_alex", "lpips_vgg", "lpips_squeeze")),
                  check=check_reconstruction))
register(Protocol("saliency", "Saliency (occlusion): attentive diffusion",
                  "medtransfer.protocols.saliency:evaluate_saliency", "values", ("attentive_diffusion",), _occlusion,
                  measures=(("attentive_diffusion", "attentive_diffusion"),), patterns=("occlusion",),
                  check=check_saliency))
register(Protocol("invariance", "Invariance (whitened cosine similarity)",
                  "medtransfer.protocols.invariance:evaluate_invariance", "values", ("cosine", "mahalanobis"),
                  _transforms, lower_is_better=("mahalanobis",), dataset_settings=_multiview,
                  colour_only=COLOUR_TRANSFORMS, check=check_invariance,
                  measures=(("cosine", "invariance_{setting}"),),
                  patterns=tuple(re.escape(n) for n in (*TRANSFORMS, MULTIVIEW))))
