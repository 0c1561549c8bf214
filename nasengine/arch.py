"""Parsing and printing architectures: ``"2,1,2,0,..."``, ``"21202..."`` or a named one."""

from __future__ import annotations

import re
from collections.abc import Sequence

from nasengine.errors import NasEngineError
from nasengine.interfaces import Arch


def format_arch(arch: Sequence[int]) -> str:
    return ",".join(str(int(c)) for c in arch)


def compact_arch(arch: Sequence[int]) -> str:
    """One digit per position when every choice is a single digit (for tables); else ``format_arch``."""
    return "".join(map(str, arch)) if all(0 <= int(c) < 10 for c in arch) else format_arch(arch)


def parse_arch(text: str, choices: Sequence[int], named: dict[str, Arch] | None = None) -> Arch:
    """An architecture from a name in ``named`` or a list of choice indices (comma/space separated, or
    one digit per position when every position has at most 10 choices)."""
    named = named or {}
    text = text.strip()
    if text in named:
        return tuple(named[text])
    compact = bool(re.fullmatch(r"[0-9]+", text)) and len(choices) > 1 and max(choices) <= 10
    if compact and len(text) != len(choices):
        raise NasEngineError(
            f"architecture {text!r} has {len(text)} digits but the space has {len(choices)} positions; "
            f"give one choice index per position"
        )
    if compact:
        digits = [int(ch) for ch in text]
    elif re.fullmatch(r"[0-9]+(\s*,\s*[0-9]+|\s+[0-9]+)*", text):
        digits = [int(tok) for tok in re.split(r"\s*,\s*|\s+", text)]
    else:
        names = ", ".join(sorted(named)) or "none"
        raise NasEngineError(
            f"unknown architecture {text!r}: give {len(choices)} comma-separated choice indices "
            f"or one of the named architectures: {names}"
        )
    if len(digits) != len(choices):
        raise NasEngineError(
            f"architecture has {len(digits)} positions but the space has {len(choices)}; "
            f"give one choice index per position"
        )
    for position, (digit, n) in enumerate(zip(digits, choices)):
        if not 0 <= digit < n:
            raise NasEngineError(
                f"choice {digit} at position {position} is out of range: that position has choices 0..{n - 1}"
            )
    return tuple(digits)
