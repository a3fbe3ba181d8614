"""Reading YAML into typed dataclasses, every key and type checked: the generic part of the
experiment config (:mod:`langneurons.runner.config` declares the sections, each study's
``stage.py`` its own section's dataclass).

``extends:`` chains of files (:func:`read_yaml`), ``${name}`` variables
(:func:`substitute_variables`), alias bombs (:func:`check_expanded_size`), a dataclass from a
mapping (:func:`build`, :func:`convert`) and back to plain data (:func:`plain`).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, Union

import yaml

from langneurons.errors import LangNeuronsError, brief

MAX_CONFIG_VALUES = 100_000
"""A config with more values than this once YAML aliases are expanded is refused (an alias bomb
of a few hundred bytes expands to billions); real configs have a few hundred."""


def check_expanded_size(data: Any, limit: int = MAX_CONFIG_VALUES) -> None:
    """Refuse data with more than ``limit`` values counted with every alias expanded (and
    self-referencing data); stops counting at the limit, so an alias bomb costs no time."""
    count, stack = 0, [data]
    while stack:
        value = stack.pop()
        count += 1
        if count > limit:
            raise LangNeuronsError(f"the config expands to more than {limit} values (YAML aliases?); refused")
        if isinstance(value, Mapping):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if not path.is_file():
        raise LangNeuronsError(f"experiment config not found: {path}")
    if path.resolve() in seen:
        raise LangNeuronsError(f"{path}: 'extends' loops back to itself")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise LangNeuronsError(f"{path}: not valid YAML ({str(error).splitlines()[0][:120]})") from None
    except (UnicodeDecodeError, OSError) as error:
        raise LangNeuronsError(f"{path}: not a readable UTF-8 text file ({str(error)[:120]})") from None
    try:
        check_expanded_size(data)
    except LangNeuronsError as error:
        raise LangNeuronsError(f"{path}: {error}") from None
    if not isinstance(data, dict):
        raise LangNeuronsError(f"{path}: an experiment config must be a mapping of sections")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    base = read_yaml((path.parent / str(parent)), seen + (path.resolve(),))
    return merge(base, data)


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def substitute_variables(data: dict, variables: Mapping[str, str] | None = None) -> dict:
    """``data`` without its ``vars`` section, with every ``${name}`` in its strings replaced
    (``variables`` first, then ``vars``)."""
    data = dict(data)
    defaults = data.pop("vars", None) or {}
    if not isinstance(defaults, Mapping):
        raise LangNeuronsError("vars must be a mapping of names to strings")
    values = {str(k): str(v) for k, v in {**defaults, **(variables or {})}.items()}

    def replace_in(value: Any, path: str) -> Any:
        if isinstance(value, str):
            def lookup(match: re.Match) -> str:
                name = match.group(1)
                if name not in values:
                    raise LangNeuronsError(f"{path} uses ${{{name}}} but no value is given "
                                           f"(add it under vars: or pass --var {name}=VALUE)")
                return values[name]

            return _VARIABLE.sub(lookup, value)
        if isinstance(value, Mapping):
            return {k: replace_in(v, join_path(path, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [replace_in(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    return replace_in(data, "")


def merge(base: Mapping, override: Mapping) -> dict:
    """``override`` on top of ``base``: nested mappings merged, other values replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build(cls, data: Any, path: str, excluded: tuple[str, ...] = (), fixed: Mapping | None = None,
           extra: tuple[str, ...] = ()):
    """An instance of dataclass ``cls`` from a mapping, every key and type checked.

    excluded: fields the mapping may not set (``fixed`` values or the defaults apply);
    extra: further keys the section allows, read elsewhere (named in the error message only).
    """
    where = path or "the config"
    if not isinstance(data, Mapping):
        raise LangNeuronsError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls) if f.init and not f.name.startswith("_") and f.name not in excluded]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise LangNeuronsError(f"unknown key {join_path(path, unknown[0])}; allowed: {', '.join(sorted(known + list(extra)))}")
    kwargs = dict(fixed or {})
    for f in fields(cls):
        if f.name in data:
            kwargs[f.name] = convert(hints[f.name], data[f.name], join_path(path, f.name))
        elif f.init and f.name not in kwargs and f.default is MISSING and f.default_factory is MISSING:
            raise LangNeuronsError(f"missing key {join_path(path, f.name)}")
    try:
        return cls(**kwargs)
    except LangNeuronsError as error:
        raise LangNeuronsError(f"{where}: {error}") from None


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def convert(hint, value: Any, path: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return convert(option, value, path)
            except LangNeuronsError as error:
                errors.append(error)
        raise errors[0]
    if origin is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise LangNeuronsError(f"{path} must be a list, got {type(value).__name__}")
        return tuple(convert(args[0], item, f"{path}[{i}]") for i, item in enumerate(value))
    if is_dataclass(hint):
        return build(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise LangNeuronsError(f"{path} must be true or false, got {brief(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise LangNeuronsError(f"{path} must be an integer, got {brief(value)}")
        return value
    if hint is float:
        if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value.strip()):
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LangNeuronsError(f"{path} must be a number, got {brief(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise LangNeuronsError(f"{path} must be a string, got {brief(value)}")
        return str(value)
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise LangNeuronsError(f"{path} must be a mapping")
        return dict(value)
    return value


def plain(value: Any) -> Any:
    """Tuples -> lists, recursively (JSON/YAML friendly)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
