"""Configs: dataclass defaults < preset file < --config file < --set key=value.

In the manner of nanoGPT's configurator: values are parsed with ast.literal_eval, an override
must have the type of the default it replaces, and unknown keys are refused with a close match.
Everything here works on plain dicts so that `dlref show` can resolve a config without
importing a recipe module (and so TensorFlow).
"""

import ast
import dataclasses
import sys
from pathlib import Path

import tomli_w

from dlref.errors import DlrefError, close_match

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def parse_overrides(items):
    """Turns ['epochs=5', 'hidden_units=(64, 32)'] into a dict of Python values."""
    values = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise DlrefError(f"--set expects key=value, got {item!r}.")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()  # A bare word such as adam or relu is a string.
        values[key.strip()] = value
    return values


def merge(defaults, layers):
    """Applies each (label, values) layer over the defaults, checking keys and types.

    Args:
        defaults: field name -> default value.
        layers: (where the values came from, dict) pairs, lowest priority first.
    """
    resolved = dict(defaults)
    for label, values in layers:
        for key, value in values.items():
            if key not in defaults:
                raise DlrefError(
                    f"Unknown config key {key!r} in {label}.{close_match(key, defaults)} "
                    f"Known keys: {', '.join(sorted(defaults))}."
                )
            resolved[key] = coerce(key, value, defaults[key], label)
    return resolved


def coerce(key, value, default, label="--set"):
    """Returns `value` converted to the type of `default`, or raises DlrefError."""
    expected = type(default)
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"  # As TOML (config.toml, dlref show) spells them.
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, (tuple, list)):
        ok = isinstance(value, (tuple, list))
        if isinstance(value, int) and not isinstance(value, bool):
            value, ok = (value,), True  # hidden_units=64 means one layer of 64.
        value = tuple(value) if ok else value
    else:
        ok = default is None or isinstance(value, expected)
    if not ok:
        raise DlrefError(
            f"{key} in {label} must be {expected.__name__} (default {default!r}), "
            f"got {type(value).__name__} {value!r}."
        )
    return value


def field_defaults(config_cls):
    return {f.name: f.default for f in dataclasses.fields(config_cls)}


def read_toml(path):
    """Reads a preset or config file: {'recipe': ..., 'summary': ..., 'config': {...}}."""
    path = Path(path)
    if not path.is_file():
        raise DlrefError(f"Config file not found: {path}")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise DlrefError(f"{path} is not valid TOML: {error}") from None
    if not isinstance(document.get("config", {}), dict):
        raise DlrefError(f"{path}: [config] must be a table of key = value lines.")
    return document


def to_toml(recipe, values, summary=None, data=None):
    """The resolved config as a file that `dlref train --config FILE` accepts; `data` (the
    Source's fields) makes it train on the same data."""
    document = {"recipe": recipe}
    if summary:
        document["summary"] = summary
    document["config"] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    if data:
        document["data"] = dict(data)
    return tomli_w.dumps(document)


def data_table(document, path):
    """The [data] table of a config file, its keys checked and its relative paths taken from
    the file's folder; {} when there is none."""
    import dataclasses

    from dlref.data import Source

    data = document.get("data") or {}
    if not isinstance(data, dict):
        raise DlrefError(f"{path}: [data] must be a table of key = value lines.")
    known = [f.name for f in dataclasses.fields(Source)]
    for key in data:
        if key not in known:
            raise DlrefError(f"Unknown key {key!r} in [data] of {path}.{close_match(key, known)} "
                             f"Known keys: {', '.join(known)}.")
    for key in ("data", "val_data", "test_data"):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str(Path(path).resolve().parent / data[key])
    return data
