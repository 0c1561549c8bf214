"""Where nasengine keeps caches (generated data, FLOPs tables): ``$NASENGINE_CACHE`` or ``~/.cache/nasengine``."""

from __future__ import annotations

import os
from pathlib import Path

from nasengine.errors import NasEngineError


def cache_dir(*parts: str) -> Path:
    """A cache folder (created if missing) under the nasengine cache root."""
    root = Path(os.environ.get("NASENGINE_CACHE", Path.home() / ".cache" / "nasengine"))
    path = root.joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NasEngineError(
            f"the nasengine cache {root} (or a folder in it) is a file; point NASENGINE_CACHE at a folder"
        ) from None
    except OSError as exc:
        raise NasEngineError(
            f"cannot make the nasengine cache folder {path} ({exc.strerror}); "
            "point NASENGINE_CACHE at a writable folder"
        ) from None
    return path
