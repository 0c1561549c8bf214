"""The plugin path, proven with the shipped example package `examples/nasengine-tiny`: once installed,
`nasengine list` shows its space and a smoke run searches it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "nasengine-tiny"
pytestmark = pytest.mark.slow  # a pip install and a nasengine process per test: end to end, for `make test-all`


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """An environment in which the example package is installed (into a private folder on PYTHONPATH)."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        timeout=300,
        env={**os.environ, "TMPDIR": str(build)},
    )
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))}


def nasengine(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "nasengine", *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )


def test_installed_plugin_is_listed(plugin_env):
    result = nasengine(plugin_env, "list")
    assert result.returncode == 0, result.stderr
    assert "tiny-convnet" in result.stdout and "nasengine-tiny 0.1.0" in result.stdout


def test_not_installed_plugin_is_unknown():
    result = nasengine(os.environ, "space", "tiny-convnet")
    assert result.returncode == 2 and "unknown space 'tiny-convnet'" in result.stderr


def test_smoke_run_searches_the_plugin_space(plugin_env, tmp_path):
    out = tmp_path / "run"
    result = nasengine(plugin_env, "run", "--preset", "smoke", "--space", "tiny-convnet", "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    history = [json.loads(line) for line in (out / "search" / "history.jsonl").read_text().splitlines()]
    assert len(history) == 8  # smoke preset: population 4 x 2 generations
    assert all(len(r["arch"]) == 4 for r in history)
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert set(summary["retrain"]) == {"best", "all-3x3"}


def test_the_plugins_own_conformance_tests_pass(plugin_env, tmp_path):
    """The example's tests use nasengine.testing as a third-party author would; they must pass as shipped."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True,
        text=True,
        env=plugin_env,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "3 passed" in result.stdout
