"""Turning ``KEY=VALUE`` command-line pairs into (nested) option dicts, values read as TOML."""

from __future__ import annotations

import tomllib
from typing import Any

from nasengine.errors import NasEngineError


def parse_value(text: str) -> Any:
    """``3`` → 3, ``0.5`` → 0.5, ``true`` → True, ``[1, 2]`` → [1, 2], anything else → the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_pairs(pairs: tuple[str, ...] | list[str], what: str) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` → ``{"a": {"b": 1}, "c": "x"}``."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise NasEngineError(f"{what} {pair!r} is not KEY=VALUE (e.g. {what} search.batch_size=8)")
        node = result
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = parse_value(value.strip())
    return result
