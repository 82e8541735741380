"""whyrec's one config system: dataclasses, filled from a section of a YAML file plus overrides.

A config file (configs/*.yaml) has one section per stage (catalog, encoder, index, synth, tune,
serve, eval, ...). Each stage reads its section into its own dataclass with `section()`; unknown
keys are an error, so a typo never passes silently. Command-line flags override the file.
"""
from __future__ import annotations

import dataclasses
import os
import re
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def load_yaml(path: str | Path | None) -> dict[str, Any]:
    """Read a YAML config ({} for None). `${VAR}` and `${VAR:-default}` expand from the environment."""
    if path is None:
        return {}
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} not found")
    text = expand_env(path.read_text())
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping of sections")
    return data


ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str) -> str:
    """Replace `${VAR}` (empty when unset) and `${VAR:-default}` with values from the environment."""
    return ENV_RE.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), text)


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from a dict; nested dataclass fields are built recursively."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)} in {where or cls.__name__}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    for name, value in list(data.items()):
        hint = hints.get(name)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            data[name] = from_dict(hint, value, f"{where}.{name}")
    return cls(**data)


def section(config: dict[str, Any] | str | Path | None, name: str, cls: type[T], /, **overrides: Any) -> T:
    """The `name` section of a config (dict or YAML path) as `cls`, with non-None overrides applied."""
    if not isinstance(config, dict):
        config = load_yaml(config)
    data = dict(config.get(name) or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(cls, data, name)
