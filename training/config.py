"""Training configs: TOML files read into typed dataclasses, with ``--set key=value`` on top.

A config file has one table per section (``[model]``, ``[data]``, ...); each section is a
dataclass whose fields are the keys it takes, so a misspelt key is an error naming the file and
the key rather than a setting silently ignored. TOML because it is in the standard library
(``tomllib``), has comments and types, and reads like the INI files people already write.
Relative paths in a config are taken from the working directory, as on the command line.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from mofo.shared.errors import MofoError

T = TypeVar("T")


class ConfigError(MofoError):
    """A config that cannot be read: a missing file, bad TOML, an unknown key, a wrong type."""


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: is not valid TOML: {e}") from None


def parse_value(text: str) -> Any:
    """A ``--set`` value as TOML (``3``, ``1e-4``, ``true``, ``"x"``, ``[1, 2]``), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``section.key=value`` settings on top of a config's tables (a copy)."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. optim.epochs=10")
        section, _, name = key.strip().partition(".")
        table = merged.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"--set {item!r}: {section} is not a table")
        *parents, leaf = name.split(".")
        for parent in parents:  # nested tables, e.g. deepspeed.zero_optimization.stage
            table = table.setdefault(parent, {})
        table[leaf] = parse_value(value.strip())
    return merged


def _check_type(where: str, value: Any, hint: Any) -> Any:
    """``value`` if it fits the type ``hint`` (ints pass as floats), else a ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check_type(where, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not {_type_name(hint)}")
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        choices = ", ".join(repr(a) for a in typing.get_args(hint))
        raise ConfigError(f"{where}: {value!r} is not one of {choices}")
    if hint is type(None):
        if value is None:
            return value
    elif origin in (tuple, list):
        if isinstance(value, list | tuple):
            args = typing.get_args(hint)
            item = args[0] if args else Any
            if origin is tuple and args and args[-1] is not Ellipsis:
                if len(value) != len(args):
                    raise ConfigError(f"{where}: {value!r} needs {len(args)} items")
                return tuple(_check_type(where, v, a) for v, a in zip(value, args, strict=True))
            return origin(_check_type(where, v, item) for v in value)
    elif origin is dict or hint is dict:
        if isinstance(value, dict):
            return value
    elif hint is Any:
        return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ConfigError(f"{where}: {value!r} is not {_type_name(hint)}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def section(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Build the dataclass ``cls`` from a table, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(fields))}"
        )
    values = {k: _check_type(f"{where}.{k}", v, hints[k]) for k, v in data.items()}
    try:
        return cls(**values)
    except TypeError as e:  # a required key is missing
        raise ConfigError(f"{where}: {e}") from None
    except ValueError as e:  # a section's own checks
        raise ConfigError(f"{where}: {e}") from None


def load_run_config(
    cls: type[T], sections: dict[str, type], path: Path | None, overrides: list[str]
) -> T:
    """A run config ``cls`` from the TOML file at ``path`` (or the defaults) with ``--set``
    overrides on top: one dataclass per table in ``sections``, plus a free ``[deepspeed]``."""
    where = str(path) if path else "config"
    data = apply_overrides(read_toml(path) if path else {}, list(overrides))
    unknown = sorted(set(data) - {*sections, "deepspeed"})
    if unknown:
        raise ConfigError(f"{where}: unknown section [{unknown[0]}]")
    parts = {k: section(c, data.get(k, {}), f"{where}: [{k}]") for k, c in sections.items()}
    return cls(**parts, deepspeed=data.get("deepspeed", {}))
