"""Shared set-up of the test suite: threads per worker, a cache of its own, one finished smoke run.

- **Threads.** ``make test`` runs the tests in pytest-xdist workers side by side; each worker gets
  ``cores // workers`` torch threads (at least one), so workers × threads never exceed the cores (three
  torch processes at 2 threads on 2 cores ran ~10× slower each). Set before anything imports torch, and
  inherited by the ``nasengine`` processes the tests start.
- **Cache.** ``NASENGINE_CACHE`` points at ``.cache/tests/`` in this checkout, never the user's
  ``~/.cache/nasengine``: the generated embedded data and FLOPs tables are built once per checkout (their
  writes are atomic, so two workers may build one at the same time) and a test cannot spoil a user's cache.
- **Shared runs.** ``smoke_run`` is a finished ``nasengine run --preset smoke`` (seed 0) made once per test
  session and shared by every worker; tests only read it, and a test that changes a run takes
  ``smoke_run_copy``, its own copy. ``distilled_run`` (distillation and a comparison search) and
  ``retrained_run`` (one named architecture retrained) are shared the same way.
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


def shared_run(tmp_path_factory: pytest.TempPathFactory, name: str, *commands: list[str]) -> Path:
    """The run directory ``name`` made by the ``nasengine`` ``commands`` (``{out}`` stands for it), once per test
    session: the first worker to ask makes it under a file lock, the others wait and reuse it. What the first
    command prints is kept beside it as ``<name>.out``."""
    from click.testing import CliRunner
    from filelock import FileLock

    from nasengine.cli import cli

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if "PYTEST_XDIST_WORKER" in os.environ else base  # the workers' bases share a parent
    out = shared / name
    with FileLock(str(shared / f"{name}.lock")):
        if not (shared / f"{name}.out").is_file():
            shutil.rmtree(out, ignore_errors=True)
            outputs = []
            for command in commands:
                result = CliRunner().invoke(cli, [part.format(out=out) for part in command])
                assert result.exit_code == 0, result.output
                outputs.append(result.output)
            (shared / f"{name}.out").write_text(outputs[0])
    return out


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished smoke run, shared by the whole session: read it, never write into it."""
    return shared_run(tmp_path_factory, "smoke-run", ["run", "--preset", "smoke", "--out", "{out}", "--quiet"])


@pytest.fixture(scope="session")
def distilled_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished smoke run whose supernet was distilled (teacher, distill stage), with a comparison search
    (``search-random/``); shared like ``smoke_run``."""
    return shared_run(
        tmp_path_factory,
        "distilled-run",
        ["run", "--preset", "smoke", "--out", "{out}", "--quiet", "--set", "pretrain_schedule.sampling=distill"],
        ["search", "{out}", "--strategy", "random", "--budget-like", "evolution", "--quiet"],
    )


@pytest.fixture(scope="session")
def retrained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke run without pre-training, search or baseline: only the named FPN architecture, retrained; shared
    like ``smoke_run``."""
    arch = ["--arch", "detnas-coco-fpn-300m", "--set", "retrain_baseline=false"]
    return shared_run(
        tmp_path_factory,
        "retrained-run",
        ["run", "--preset", "smoke", "--no-pretrain", *arch, "--out", "{out}", "--quiet"],
    )


@pytest.fixture(scope="session")
def smoke_run_output(smoke_run: Path) -> str:
    """What ``nasengine run`` printed while it made ``smoke_run``."""
    return (smoke_run.parent / f"{smoke_run.name}.out").read_text()


@pytest.fixture
def smoke_run_copy(smoke_run: Path, tmp_path: Path) -> Path:
    """This test's own copy of ``smoke_run``, to change as it likes."""
    return Path(shutil.copytree(smoke_run, tmp_path / "smoke-run"))
