"""Shared fixtures: a private cache per test session is NOT used — the embedded data and FLOPs tables
are deterministic and expensive to build, so tests share the user's nasengine cache."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
