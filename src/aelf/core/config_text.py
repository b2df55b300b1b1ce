"""Settings as text: YAML files, ``--set key=value`` overrides, and the flat ``key = value`` form the card and the
report show. Plain data only: YAML is read with a safe loader, nothing is evaluated."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from aelf.core.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """YAML's safe loader with YAML 1.2's booleans: only true/false are booleans, so ``train.amp: off`` stays the
    text ``off`` (YAML 1.1, PyYAML's default, reads on/off/yes/no as booleans too)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml_text(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: plain data only, never objects


def parse_override(text: str) -> dict[str, Any]:
    """``"method.attack.eps=8/255"`` -> ``{"method": {"attack": {"eps": "8/255"}}}`` (values read as YAML scalars)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects key=value, e.g. train.epochs=5 (got {text!r})")
    try:
        value = load_yaml_text(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return nest(key, value)


def nest(dotted_key: str, value: Any) -> dict[str, Any]:
    for part in reversed(dotted_key.split(".")):
        value = {part: value}
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        data = load_yaml_text(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def flatten_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings -> ``{"method.attack.eps": "0.3", ...}`` (values as JSON text)."""
    flat = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_settings(value, name + "."))
        else:
            flat[name] = json.dumps(value)
    return flat
