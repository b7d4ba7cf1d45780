"""A bad config is refused before any job runs, naming the key and what is allowed.

Schema violations come from ``config.resolve``, the rest (roots, classes, options) from
``Study``; the workflow builds a Study while it reads the Snakefile, so ``snakemake -n``
fails on each of these too (one subprocess test below).
"""

import copy

import pytest
import yaml

from medtransfer.study import Study
from workflow_helpers import make_workdir, snakemake

BASE = {
    "models": {"supervised": {}},
    "datasets": {"demo_cxr": {"kind": "demo_cxr"}},
    "protocols": {"linear": {}, "fewshot": {"n_support": [2]}},
}


def _with(path: str, value):
    """BASE with the value at the dotted ``path`` set (a missing mapping is created)."""
    config = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return config


SCHEMA_CASES = {
    "unknown key": (_with("seeed", 1), r"config key \(top level\): Additional properties are not allowed "
                                       r"\('seeed' was unexpected\); allowed: the keys \[.*'seed'"),
    "unknown nested key": (_with("protocols.linear.gridpoints", 3),
                           r"config key protocols\.linear: .*'gridpoints' was unexpected.*allowed: the keys "
                           r"\[.*'grid_points'"),
    "wrong type": (_with("image_size", "big"),
                   r"config key image_size: 'big' is not of type 'integer'; allowed: type integer, >= 32"),
    "float seed": (_with("seed", 1.5), r"config key seed: 1\.5 is not of type 'integer'"),
    "unknown value": (_with("precision", "fp16"),
                      r"config key precision: 'fp16' is not one of \['fp32', 'bf16'\]; allowed: one of"),
    "bad device": (_with("device", "gpu"), r"config key device: 'gpu' does not match .*allowed: type string, "
                                           r"matching \^\(auto\|cpu"),
    "zero image size": (_with("image_size", 0), r"config key image_size: 0 is less than the minimum of 32; "
                                                r"allowed: type integer, >= 32"),
    "negative demo size": (_with("datasets.demo_cxr.demo", {"size": -8}),
                           r"config key datasets\.demo_cxr\.demo\.size: -8 is less than the minimum of 32"),
    "zero batch": (_with("protocols.finetune", {"batch_size": 0}),
                   r"config key protocols\.finetune\.batch_size: 0 is less than the minimum of 2"),
    "zero episodes": (_with("protocols.fewshot.episodes", 0),
                      r"config key protocols\.fewshot\.episodes: 0 is less .*allowed: type integer, >= 1"),
    "zero shots": (_with("protocols.fewshot.n_support", [0]),
                   r"config key protocols\.fewshot\.n_support\.0: 0 is less than the minimum of 1"),
    "no shots": (_with("protocols.fewshot.n_support", []),
                 r"config key protocols\.fewshot\.n_support: \[\] should be non-empty.*at least 1 item"),
    "no C values": (_with("protocols.linear.c_values", []), r"config key protocols\.linear\.c_values: \[\]"),
    "negative lr": (_with("protocols.finetune", {"lr": -0.1}),
                    r"config key protocols\.finetune\.lr: -0\.1 is less than or equal to the minimum of 0; "
                    r"allowed: type number, > 0"),
    "zero temperature": (_with("protocols.knn", {"temperature": 0}), r"protocols\.knn\.temperature: 0 .*> 0"),
    "zero reconstructions": (_with("protocols.reconstruction", {"n_images": 0}),
                             r"protocols\.reconstruction\.n_images: 0 is less than the minimum of 1"),
    "model name with a slash": (_with("models", {"evil/../x": {"path": "w.pth", "format": "torchvision"}}),
                                r"config key models: 'evil/\.\./x' does not match .*names become paths"),
    "model name with ..": (_with("models", {"a..b": {"path": "w.pth", "format": "torchvision"}}),
                           r"config key models: 'a\.\.b' does not match .*no '/' or '\.\.'"),
    "dataset name ..": (_with("datasets", {"..": {"kind": "demo_cxr"}}), r"config key datasets: '\.\.' does not match"),
    "dataset name with a slash": (_with("datasets", {"a/b": {"kind": "demo_cxr"}}),
                                  r"config key datasets: 'a/b' does not match"),
    "unknown dataset kind": (_with("datasets.demo_cxr.kind", "mnist"),
                             r"config key datasets\.demo_cxr\.kind: 'mnist' is not one of \['demo_cxr'"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_CASES))
def test_schema_refuses(case):
    config, message = SCHEMA_CASES[case]
    with pytest.raises(ValueError, match=message):
        Study(config)


def test_every_error_is_listed_at_once():
    config = _with("image_size", 0)
    config["seed"] = -1
    with pytest.raises(ValueError, match=r"(?s)config key image_size: 0 .*\nconfig key seed: -1 is less"):
        Study(config)


def test_a_root_or_csv_that_does_not_exist_is_named(tmp_path):
    config = _with("datasets", {"bach": {"kind": "bach", "root": "nope"},
                                "mine": {"kind": "csv", "csv": "labels.csv"}})
    config["data_root"] = str(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"(?s)dataset 'bach': root .*nope \(data_root \+ root\) does not "
                                                r"exist.*\ndataset 'mine': csv .*labels\.csv .*does not exist"):
        Study(config)
    (tmp_path / "nope").mkdir()
    (tmp_path / "labels.csv").write_text("path,label\n")
    Study(config)


@pytest.mark.parametrize("where", ["datasets.demo_cxr.fewshot.n_way", "protocols.fewshot.n_way"])
def test_n_way_above_the_number_of_classes(where):
    with pytest.raises(ValueError, match=rf"dataset 'demo_cxr': few-shot n_way 3 \({where}\) is more than its 2 "
                                         r"classes \['no_effusion', 'effusion'\]; allowed: 2 to 2"):
        Study(_with(where, 3))
    Study(_with(where, 3) | {"protocols": {"linear": {}}})  # no few-shot, no limit


def test_n_way_against_the_classes_an_option_picks(tmp_path):
    config = _with("datasets", {"pm": {"kind": "ichallenge_pm", "root": str(tmp_path)}})
    Study(config)
    with pytest.raises(ValueError, match=r"dataset 'pm': few-shot n_way 4 .* more than its 2 classes"):
        Study(_with("protocols.fewshot.n_way", 4) | {"datasets": config["datasets"]})


def test_bad_dataset_options_are_refused_before_indexing(tmp_path):
    config = _with("datasets", {"cx": {"kind": "chexpert", "root": str(tmp_path), "options": {"uncertain": "maybe"}}})
    with pytest.raises(ValueError, match=r"dataset 'cx': chexpert: option uncertain='maybe' is not allowed; use "
                                         r"one of \['ones', 'zeros'\]"):
        Study(config)


@pytest.mark.parametrize("config, message", [
    (_with("protocols.linear.gridpoints", 3), r"'gridpoints' was unexpected\); allowed: the keys \[.*'grid_points'"),
    (_with("datasets.demo_cxr.fewshot", {"n_way": 3}), r"few-shot n_way 3 .*allowed: 2 to 2"),
], ids=["unknown key", "n_way"])
@pytest.mark.slow  # runs Snakemake
def test_snakemake_dry_run_fails_on_a_bad_config(tmp_path, config, message):
    workdir = make_workdir(tmp_path, config)
    proc = snakemake(workdir, "-n", check=False, timeout=300)
    assert proc.returncode != 0
    assert __import__("re").search(message, proc.stdout + proc.stderr), (proc.stdout + proc.stderr)[-3000:]
    assert not (workdir / "results").exists() and not (workdir / "resources").exists()
    assert yaml.safe_load((workdir / "config" / "config.yaml").read_text()) == config
