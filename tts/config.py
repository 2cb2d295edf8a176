"""YAML <-> dataclass configs, the one loader every trainer uses.

A YAML file maps one-to-one onto a dataclass: each key is a field, a nested
mapping fills a nested dataclass field, an unknown key is an error that names
the known ones. Nothing is constructed from strings.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file is missing, names an unknown field or holds a bad value."""


def from_dict(cls: type[T], values: dict | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from a (nested) dict; unknown keys raise :class:`ConfigError`."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    out = {}
    for name, value in values.items():
        sub = hints.get(name)
        if isinstance(sub, types.UnionType):  # X | None: the dataclass inside
            sub = next((a for a in typing.get_args(sub) if a is not type(None)), sub)
        if dataclasses.is_dataclass(sub) and isinstance(value, dict):
            value = from_dict(sub, value, f"{where}.{name}")
        elif typing.get_origin(sub) is tuple and isinstance(value, list):
            value = tuple(value)
        out[name] = value
    try:
        return cls(**out)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def load_yaml(cls: type[T], path: str | Path) -> T:
    """Read a YAML file into dataclass ``cls``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config not found: {path}")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    return from_dict(cls, values, str(path))
