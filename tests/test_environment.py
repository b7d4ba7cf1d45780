"""The conda environments mirror pyproject.toml, so conda users get the same stack."""

import re
import tomllib

import yaml

from conftest import REPO

# PyPI name -> conda-forge name where they differ.
CONDA_NAMES = {"torch": "pytorch"}
NOT_IN_CONDA = {"python", "pip"}


def _requirements():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = {}
    for spec in project["dependencies"]:
        name, rest = re.match(r"([A-Za-z0-9_.-]+)(.*)", spec).groups()
        reqs[CONDA_NAMES.get(name.lower(), name.lower())] = rest.replace(" ", "")
    return reqs


def _conda(path):
    deps = yaml.safe_load(path.read_text())["dependencies"]
    out = {}
    for dep in deps:
        if isinstance(dep, str):
            name, rest = re.match(r"([A-Za-z0-9_.-]+)(.*)", dep).groups()
            out[name.lower()] = rest.replace(" ", "")
    return out


def test_environment_yml_has_every_dependency_with_the_same_range():
    conda = _conda(REPO / "environment.yml")
    assert {k: v for k, v in conda.items() if k not in NOT_IN_CONDA} == _requirements()


def test_rule_envs_are_subsets_with_the_same_ranges():
    reqs = _requirements()
    for env in sorted((REPO / "envs").glob("*.yaml")):
        for name, version in _conda(env).items():
            if name in NOT_IN_CONDA:
                continue
            assert name in reqs, f"{env.name}: {name} is not a dependency in pyproject.toml"
            assert version == reqs[name], f"{env.name}: {name}{version} != pyproject {reqs[name]}"


def test_every_rule_names_an_existing_conda_env():
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        rules = re.findall(r"^rule (\w+):", text, flags=re.M)
        envs = re.findall(r'conda:\n\s+"([^"]+)"', text)
        assert len(envs) == len(rules), f"{smk.name}: every rule needs a conda env"
        for env in envs:
            assert (smk.parent / env).resolve().is_file(), f"{smk.name}: {env} does not exist"
