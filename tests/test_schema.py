"""The schema is the one home of every setting: descriptions, enums and defaults agree with the code."""

import importlib
import inspect
import re

import pytest

from medtransfer import protocols as registry
from medtransfer.config import load_schema, resolve
from medtransfer.data.adapters import DATASET_KINDS
from medtransfer.metrics import SELECTION_METRICS
from medtransfer.runtime import PRECISIONS
from medtransfer.weights.formats import ARCHITECTURES, FORMATS, NORMALISATIONS

SCHEMA = load_schema()
PROPS = SCHEMA["properties"]
MODEL = PROPS["models"]["additionalProperties"]["properties"]
DATASET = PROPS["datasets"]["additionalProperties"]["properties"]


def _walk(node, path=""):
    """(path, schema) of every declared property, recursively."""
    for key, sub in node.get("properties", {}).items():
        yield f"{path}{key}", sub
        yield from _walk(sub, f"{path}{key}.")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _walk(extra, f"{path}*.")


def _entry(protocol):
    module, name = registry.get(protocol).entry.split(":")
    return getattr(importlib.import_module(module), name)


def test_every_setting_is_described():
    missing = [path for path, sub in _walk(SCHEMA) if not sub.get("description")]
    assert missing == []


@pytest.mark.parametrize("schema_values, code_values", [
    (MODEL["format"]["enum"], FORMATS),
    (MODEL["arch"]["enum"], ARCHITECTURES),
    (MODEL["normalisation"]["enum"], NORMALISATIONS),
    (DATASET["kind"]["enum"], DATASET_KINDS),
    (DATASET["metric"]["enum"], SELECTION_METRICS),
    (PROPS["precision"]["enum"], PRECISIONS),
    (list(PROPS["protocols"]["properties"]), registry.PROTOCOLS),
], ids=["formats", "archs", "normalisations", "dataset kinds", "metrics", "precisions", "protocols"])
def test_enums_equal_the_code_registries(schema_values, code_values):
    assert set(schema_values) == set(code_values)


@pytest.mark.parametrize("protocol", sorted(registry.PROTOCOLS))
def test_protocol_defaults_equal_the_entry_points(protocol):
    """Every schema default of a protocol equals the keyword default of the function it is passed to."""
    params = inspect.signature(_entry(protocol)).parameters
    section = PROPS["protocols"]["properties"][protocol]["properties"]
    checked = 0
    for key, sub in section.items():
        # a required parameter (no default) always gets the resolved config's value
        if key in params and "default" in sub and params[key].default is not inspect.Parameter.empty:
            assert params[key].default == sub["default"], f"protocols.{protocol}.{key}"
            checked += 1
    assert checked >= 1
    # and the shared settings each protocol takes
    for key in ("seed", "device", "metric", "precision"):
        if key in params:
            top = PROPS[key] if key in PROPS else DATASET[key]
            assert params[key].default == top["default"], f"{protocol}: {key}"


def test_feature_and_cache_defaults_equal_the_schema():
    from medtransfer.data.cache import build_full_cache
    from medtransfer.features.extract import extract

    params = inspect.signature(extract).parameters
    for key in ("precision", "device", "seed", "deterministic"):
        assert params[key].default == PROPS[key]["default"], key
    finetune = PROPS["protocols"]["properties"]["finetune"]["properties"]
    params = inspect.signature(build_full_cache).parameters
    assert params["scale"].default == finetune["full_scale"]["default"]
    assert params["max_aspect"].default == finetune["full_max_aspect"]["default"]


def test_resolve_fills_every_default_and_names_bad_keys():
    config = resolve({"models": {"supervised": {}}, "datasets": {"d": {"kind": "demo_cxr"}},
                      "protocols": {"knn": {}, "fewshot": {"n_support": [5]}}})
    assert config["protocols"]["knn"] == {"k": 20, "temperature": 0.07, "n_bootstrap": 1000}
    assert config["protocols"]["fewshot"]["n_query"] == 15 and config["protocols"]["fewshot"]["n_support"] == [5]
    assert config["datasets"]["d"]["split"] == "published" and config["datasets"]["d"]["metric"] == "accuracy"
    assert config["seed"] == 0 and config["image_size"] == 224 and "linear" not in config["protocols"]
    with pytest.raises(ValueError, match=r"config key protocols.knn: Additional properties .*'kk'"):
        resolve({"models": {"m": {}}, "datasets": {"d": {"kind": "demo_cxr"}}, "protocols": {"knn": {"kk": 1}}})
    with pytest.raises(ValueError, match=r"config key datasets.d.metric: 'f1' is not one of"):
        resolve({"models": {"m": {}}, "datasets": {"d": {"kind": "demo_cxr", "metric": "f1"}}, "protocols": {}})


def test_the_setting_wildcard_matches_every_setting_a_protocol_can_name():
    pattern = re.compile(f"^(?:{registry.setting_pattern()})$")
    settings = {"n_support": [1, 5, 20], "transforms": {t: [1] for t in registry.TRANSFORMS}}
    for protocol in registry.PROTOCOLS.values():
        names = protocol.settings(settings) + protocol.dataset_settings({"multiview": True})
        assert names and all(pattern.match(n) for n in names), protocol.name
    assert not pattern.match("shot") and not pattern.match("5shots")
    assert registry.support_size("20shot") == 20
    with pytest.raises(ValueError, match=r"few-shot setting 'manyshot' is not <k>shot"):
        registry.support_size("manyshot")


def test_a_protocol_compares_the_datasets_headline_metric_when_it_reports_it():
    assert registry.get("linear").compared_metric("balanced_accuracy") == "balanced_accuracy"
    assert registry.get("fewshot").compared_metric("balanced_accuracy") == "accuracy"
    assert registry.get("saliency").compared_metric("auroc") == "attentive_diffusion"
