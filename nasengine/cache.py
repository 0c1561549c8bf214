"""Where nasengine keeps caches (generated data, FLOPs tables): ``$NASENGINE_CACHE`` or ``~/.cache/nasengine``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """A cache folder (created if missing) under the nasengine cache root."""
    root = Path(os.environ.get("NASENGINE_CACHE", Path.home() / ".cache" / "nasengine"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
