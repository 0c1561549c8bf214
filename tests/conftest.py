"""Shared set-up of the test suite: threads per worker, a cache of its own, one finished smoke run.

- **Threads.** ``make test`` runs the tests in pytest-xdist workers side by side; each worker gets
  ``cores // workers`` torch threads (at least one), so workers × threads never exceed the cores (three
  torch processes at 2 threads on 2 cores ran ~10× slower each). Set before anything imports torch, and
  inherited by the ``nasengine`` processes the tests start.
- **Cache.** ``NASENGINE_CACHE`` points at ``.cache/tests/`` in this checkout, never the user's
  ``~/.cache/nasengine``: the generated embedded data and FLOPs tables are built once per checkout (their
  writes are atomic, so two workers may build one at the same time) and a test cannot spoil a user's cache.
- **One smoke run.** ``smoke_run`` is a finished ``nasengine run --preset smoke`` (seed 0) made once per
  test session and shared by every worker; tests only read it. A test that changes a run takes
  ``smoke_run_copy``, its own copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // WORKERS))
os.environ["NASENGINE_CACHE"] = str(ROOT / ".cache" / "tests")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished smoke run, shared by the whole session: read it, never write into it."""
    from click.testing import CliRunner
    from filelock import FileLock

    from nasengine.cli import cli

    # the base temp folder's parent is shared by the session's workers; each worker has its own base
    shared = (
        tmp_path_factory.getbasetemp().parent if "PYTEST_XDIST_WORKER" in os.environ else tmp_path_factory.getbasetemp()
    )
    out = shared / "smoke-run"
    with FileLock(str(shared / "smoke-run.lock")):
        if not (out / "report" / "summary.json").is_file():
            shutil.rmtree(out, ignore_errors=True)
            result = CliRunner().invoke(cli, ["run", "--preset", "smoke", "--out", str(out), "--quiet"])
            assert result.exit_code == 0, result.output
            (shared / "smoke-run.out").write_text(result.output)
    return out


@pytest.fixture(scope="session")
def smoke_run_output(smoke_run: Path) -> str:
    """What ``nasengine run`` printed while it made ``smoke_run``."""
    return (smoke_run.parent / "smoke-run.out").read_text()


@pytest.fixture
def smoke_run_copy(smoke_run: Path, tmp_path: Path) -> Path:
    """This test's own copy of ``smoke_run``, to change as it likes."""
    return Path(shutil.copytree(smoke_run, tmp_path / "smoke-run"))
