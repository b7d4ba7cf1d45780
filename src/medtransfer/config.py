"""The study config: validated against the package's ``schema.yaml``, every default filled from it.

The schema is the one home of every setting's default and description; code takes what
this module resolved (a test checks that functions' keyword defaults equal the schema's).
It ships inside the package (``config/schema.yaml`` in a checkout is a link to it), so a
wheel installed anywhere finds it.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

#: The schema, found through the package: the same file from a checkout, an editable install
#: and a wheel. A ``Path`` because Snakemake's ``validate`` takes a file name, and pip
#: unpacks wheels, so package data is always a real file.
SCHEMA = Path(importlib.resources.files("medtransfer") / "schema.yaml")


@functools.lru_cache(maxsize=4)
def load_schema(path: str | Path = SCHEMA) -> dict[str, Any]:
    """The parsed schema at ``path`` (cached: every config and default reads it)."""
    with open(path) as handle:
        return yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: 10x faster


def _fill(node: Any, schema: Mapping[str, Any]) -> None:
    """Set missing defaults in ``node`` in place, for declared and additional properties."""
    if not isinstance(node, dict) or not isinstance(schema, Mapping):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in node and "default" in sub:
            node[key] = copy.deepcopy(sub["default"])
        if key in node:
            _fill(node[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        for key in set(node) - set(schema.get("properties", {})):
            _fill(node[key], extra)


def resolve(config: Mapping[str, Any], schema: str | Path = SCHEMA) -> dict[str, Any]:
    """A validated copy of ``config`` with every schema default filled in.

    Raises ``ValueError`` naming the offending key and the allowed values.
    """
    spec = load_schema(str(schema))
    resolved = copy.deepcopy(dict(config))
    errors = sorted(jsonschema.Draft202012Validator(spec).iter_errors(resolved),
                    key=lambda e: [str(p) for p in e.path])
    if errors:
        lines = [_explain(error) for error in errors[:SHOWN_ERRORS]]
        more = f"\n(and {len(errors) - SHOWN_ERRORS} more)" if len(errors) > SHOWN_ERRORS else ""
        raise ValueError("\n".join(lines) + more + f"\nSee the descriptions in {Path(schema).name}.")
    _fill(resolved, spec)
    return resolved


SHOWN_ERRORS = 5
_BOUNDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))


def _explain(error: Any) -> str:
    """One schema violation as 'config key <where>: <problem>; allowed: <what the schema allows>'."""
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"config key {where}: {error.message}" + (f"; allowed: {allowed}" if (allowed := _allowed(error)) else "")


def _allowed(error: Any) -> str:
    """What the failing part of the schema accepts, in words."""
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if error.validator == "additionalProperties":
        return f"the keys {sorted(schema.get('properties', {}))}" if schema.get("properties") else ""
    if error.validator == "pattern" and "propertyNames" in error.relative_schema_path:
        return (f"names matching {schema['pattern']} (letters, digits, '_', '-', '.'; no '/' or '..': "
                "names become paths)")
    parts = []
    if "enum" in schema:
        parts.append(f"one of {schema['enum']}")
    if "type" in schema:
        parts.append(f"type {schema['type']}")
    parts += [f"{sign} {schema[key]}" for key, sign in _BOUNDS if key in schema]
    if "minItems" in schema:
        parts.append(f"at least {schema['minItems']} item(s)")
    if "pattern" in schema:
        parts.append(f"matching {schema['pattern']}")
    return ", ".join(parts)


def default(*keys: str, schema: str | Path = SCHEMA) -> Any:
    """The schema's default of a setting, e.g. ``default("protocols", "linear", "grid_points")``."""
    node = load_schema(str(schema))
    for key in keys:
        props = node.get("properties", {})
        node = props[key] if key in props else node["additionalProperties"]
    return node["default"]
