"""Process layouts: the launcher, a run's recorded layout, networks side by side, torchrun by hand, two nodes.

The slow tests share one smoke run of two 1-thread processes made by ``nasengine run --procs 2``; the others
are compared with it file by file (``bench.common.compare``: wall-clock fields aside).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bench.common import compare
from nasengine.cli import cli
from nasengine.errors import NasEngineError
from nasengine.protocol.engine import Run
from nasengine.settings import config as configuration

SMOKE = ["run", "--preset", "smoke", "--quiet"]
BASELINE = "retrain/shufflenetv2-20"


def nasengine(*args: str | Path, env: dict[str, str] | None = None, timeout: int = 600) -> str:
    """``python -m nasengine ARGS`` in a process of its own (the launcher starts more); its output."""
    result = subprocess.run(
        [sys.executable, "-m", "nasengine", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_run_is_continued_only_in_the_layout_it_began_with(smoke_run, smoke_run_copy):
    recorded = configuration.load(smoke_run / "config.toml")
    assert recorded.procs == 1 and recorded.threads == torch.get_num_threads() and recorded.precision == "fp32"
    result = CliRunner().invoke(cli, [*SMOKE, "--out", str(smoke_run_copy), "--procs", "2"])
    assert result.exit_code != 0 and "procs: 1 there, 2 now" in str(result.exception)  # refused before launching
    run = Run.open(smoke_run_copy)
    run.config.procs = 2  # as if config.toml said 2 and this were one process (torchrun with another count)
    with pytest.raises(NasEngineError, match=r"was run by 2 process\(es\) and this is 1.*nasengine run --out"):
        run.start()


def test_bad_input_is_refused_once_before_any_rank_starts(tmp_path):
    result = CliRunner().invoke(
        cli, [*SMOKE, "--procs", "2", "--out", str(tmp_path / "run"), "--data-root", str(tmp_path / "missing")]
    )
    assert result.exit_code != 0 and "missing" in str(result.exception)
    assert "launching" not in result.output and not (tmp_path / "run").exists()


def test_a_cluster_needs_a_rendezvous_and_whole_nodes(tmp_path):
    from nasengine import launch

    with pytest.raises(NasEngineError, match="--rdzv-endpoint HOST:PORT"):
        launch.launch(["list"], 2, 1, launch.Launch(nodes=2))
    with pytest.raises(NasEngineError, match="does not divide into 2 nodes"):
        launch.launch(["list"], 3, 1, launch.Launch(nodes=2, rdzv_endpoint="localhost:1"))


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("launcher") / "run"
    output = nasengine(*SMOKE, "--procs", "2", "--threads", "1", "--out", out)
    assert "launching 2 processes with 1 torch thread(s) each" in output
    return out


@pytest.mark.slow
def test_two_processes_record_their_layout_and_train_independent_networks_as_one_would(two_process_run, tmp_path):
    saved = configuration.load(two_process_run / "config.toml")
    assert (saved.procs, saved.threads, saved.precision) == (2, 1, "fp32")
    # the baseline trained side by side with the winner, on rank 1: the same files as one 1-thread process's
    alone = tmp_path / "run"
    nasengine(*SMOKE, "--threads", "1", "--out", alone, "--set", "search.strategy_options.generations=1")
    assert compare(alone / BASELINE, two_process_run / BASELINE) == []
    # continued as it began without naming the layout: it launches 2 again, and everything is done
    assert "launching 2 processes" in nasengine("run", "--out", two_process_run, "--quiet")


@pytest.mark.slow
def test_torchrun_by_hand_writes_the_same_files_as_the_launcher(two_process_run, tmp_path):
    by_hand = tmp_path / "run"
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        + ["-m", "nasengine", *SMOKE, "--out", str(by_hand)],
        check=True,
        capture_output=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert compare(two_process_run, by_hand) == []


@pytest.mark.slow
def test_two_nodes_meet_at_a_c10d_rendezvous_and_search_as_one_node(two_process_run, tmp_path):
    out, endpoint = tmp_path / "run", f"127.0.0.1:{_free_port()}"
    node = [sys.executable, "-m", "nasengine", *SMOKE, "--out", str(out), "--procs", "2", "--threads", "1"]
    node += ["--nodes", "2", "--rdzv-endpoint", endpoint, "--rdzv-id", "two-nodes"]
    launchers = [subprocess.Popen(node, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in "ab"]
    outputs = [launcher.communicate(timeout=600)[0] for launcher in launchers]
    assert [launcher.returncode for launcher in launchers] == [0, 0], outputs
    assert any("launching 2 processes on 2 nodes" in output for output in outputs)
    assert compare(two_process_run, out) == []


def test_a_rank_that_cannot_join_its_group_says_so_and_exits_instead_of_waiting():
    env = {
        **os.environ,
        "RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),  # nobody serves it: rank 0 never came
        "NASENGINE_INIT_TIMEOUT": "3",
    }
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", "from nasengine.protocol import distributed; distributed.setup()"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 3 and time.perf_counter() - started < 60
    assert "error: rank 1 could not join the process group within 3 s" in result.stderr
    assert "127.0.0.1:" in result.stderr and "NASENGINE_INIT_TIMEOUT" in result.stderr


def test_the_default_precision_is_the_devices_fastest(monkeypatch):
    from nasengine.protocol.precision import resolve

    assert resolve("auto", torch.device("cpu")) == "fp32"
    for supported, expected in ((True, "bf16"), (False, "fp16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert resolve("auto", torch.device("cuda", 0)) == expected
    assert resolve("fp32", torch.device("cuda", 0)) == "fp32"  # asked for: kept
