"""Runs a user can trust: divergence stops at once, --redo recovers from corruption, one writer per directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from nasengine.cli import cli
from nasengine.errors import NasEngineError
from nasengine.protocol.engine import Run
from nasengine.rundir.checkpoint import load_checkpoint
from nasengine.rundir.lock import RunLock
from nasengine.settings import config as configuration


def invoke(*args, ok: bool = True):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_bit_is_caught_and_redo_restores_the_same_weights(smoke_run, smoke_run_copy):
    finished, run_dir = smoke_run, smoke_run_copy
    flip_a_byte(run_dir / "finetune" / "supernet.pt")
    shutil.rmtree(run_dir / "search")
    changed = r"finetune/supernet.pt changed after its phase finished.*nasengine finetune .* --redo"
    with pytest.raises(NasEngineError, match=changed):
        Run.open(run_dir).search()
    invoke("finetune", run_dir, "--redo", "--quiet")  # keeps the verified checkpoint.pt, rewrites supernet.pt
    redone = load_checkpoint(run_dir / "finetune" / "supernet.pt")["model"]
    original = load_checkpoint(finished / "finetune" / "supernet.pt")["model"]
    assert all(torch.equal(redone[k], original[k]) for k in original)
    assert not (run_dir / "retrain").exists()  # what depends on fine-tuning was cleared


def test_redo_of_a_corrupt_training_checkpoint_restarts_that_phase(smoke_run, smoke_run_copy):
    finished, run_dir = smoke_run, smoke_run_copy
    flip_a_byte(run_dir / "pretrain" / "checkpoint.pt")
    Run.open(run_dir).redo("pretrain")
    assert not (run_dir / "pretrain" / "checkpoint.pt").exists()
    assert not (run_dir / "pretrain" / "done.json").exists()
    for dependent in ("finetune", "search", "retrain", "report"):
        assert not (run_dir / dependent).exists(), dependent
    invoke("run", "--preset", "smoke", "--out", run_dir, "--quiet")
    history = (run_dir / "search" / "history.jsonl").read_text().splitlines()
    original = (finished / "search" / "history.jsonl").read_text().splitlines()
    assert [line.split('"score"')[0] for line in history] == [line.split('"score"')[0] for line in original]


def test_a_deleted_result_reopens_its_phase(smoke_run_copy):
    run_dir = smoke_run_copy
    (run_dir / "pretrain" / "supernet.pt").unlink()
    invoke("pretrain", run_dir, "--quiet")  # not a silent exit: the phase finishes again from its checkpoint
    assert (run_dir / "pretrain" / "supernet.pt").exists()


def test_divergence_stops_at_once_naming_phase_iteration_lr_and_checkpoint(tmp_path):
    config = configuration.resolve("smoke", overrides={"pretrain_schedule": {"lr": 1e12, "iterations": 6}})
    run = Run.create(tmp_path / "run", config)
    with pytest.raises(NasEngineError) as info:
        run.pretrain()
    message = str(info.value)
    assert "\n" not in message
    assert "pretrain supernet on fashion-mnist" in message and "at iteration" in message
    assert "no checkpoint of this phase yet" in message or "the newest checkpoint is" in message
    assert not (run.dir / "pretrain" / "done.json").exists()
    # the hint, as written with a VALUE: a new run from this one's configuration, with the lower rate, trains
    hint = message.split(": nasengine ", 1)[1].replace("VALUE", "0.05").replace("NEW_DIR", str(tmp_path / "lower"))
    assert hint.startswith(f"run --config {run.dir / 'config.toml'} --set pretrain_schedule.lr=")
    invoke(*hint.split(), "--quiet")
    assert configuration.load(tmp_path / "lower" / "config.toml").pretrain_schedule.lr == 0.05
    assert (tmp_path / "lower" / "retrain" / "done.json").exists()


def test_a_diverged_state_is_never_saved(tmp_path):
    """A weight that overflows is caught before the checkpoint that would have saved it."""
    from nasengine.protocol.training import state_overflow

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert state_overflow(model) is None
    with torch.no_grad():
        model[1].running_var.fill_(float("inf"))
    assert "1.running_var" in state_overflow(model)
    with torch.no_grad():
        model[1].running_var.fill_(1.0)
        model[0].weight.fill_(1e36)  # finite, but its norm overflows: diverged all the same
    assert "0.weight" in state_overflow(model)


def test_a_second_writer_is_refused_with_the_first_ones_pid_before_any_check(tmp_path):
    config = configuration.resolve("smoke", overrides={"task_options": {"data_root": str(tmp_path / "no-data")}})
    config.search.flops_max = 3e8
    configuration.save(config, tmp_path / "run" / "config.toml")  # its checks would fail: the data is missing
    lock = RunLock(tmp_path / "run").acquire()  # this process holds the run
    try:
        result = subprocess.run(
            [sys.executable, "-m", "nasengine", "pretrain", str(tmp_path / "run"), "--quiet"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        lock.release()
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"is in use by another nasengine process (pid {os.getpid()}" in result.stderr  # not the data's error
    assert not (tmp_path / "run" / "pretrain").exists()


def test_temp_files_of_killed_writes_are_removed_at_the_next_start(tmp_path):
    config = configuration.resolve("smoke")
    config.search.flops_max = 3e8
    run_dir = tmp_path / "run"
    (run_dir / "pretrain").mkdir(parents=True)
    configuration.save(config, run_dir / "config.toml")
    leftovers = [run_dir / "pretrain" / ".tmp-checkpoint.pt.x8k2p1_a", run_dir / ".tmp-done.json.q0a9zz7w"]
    for path in leftovers:
        path.write_bytes(b"partial")
    keep = run_dir / "pretrain" / "checkpoint.pt.txt"
    keep.write_text("a user's note")
    Run.create(run_dir, configuration.load(run_dir / "config.toml"))
    assert not any(path.exists() for path in leftovers)
    assert keep.exists()


@pytest.mark.slow
def test_a_resume_under_another_thread_count_continues_with_the_runs_own(smoke_run, smoke_run_copy):
    """Results depend on torch's thread count: a run records it, and a resume uses it again, whatever the
    environment says — so the redone search replays exactly."""
    recorded = configuration.load(smoke_run / "config.toml").threads
    assert recorded == torch.get_num_threads()
    other = 2 if recorded == 1 else 1
    env = {**os.environ, "OMP_NUM_THREADS": str(other)}
    result = subprocess.run(
        [sys.executable, "-m", "nasengine", "search", str(smoke_run_copy), "--redo", "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert f"{recorded} torch threads, as the run began" in " ".join((result.stdout + result.stderr).split())
    assert configuration.load(smoke_run_copy / "config.toml").threads == recorded
    for name in ("search/history.jsonl", "search/best.json"):
        assert _records(smoke_run_copy / name) == _records(smoke_run / name), name
    with pytest.raises(NasEngineError, match=f"threads: {recorded} there, {other} now"):
        invoke("run", "--preset", "smoke", "--out", smoke_run_copy, "--set", f"threads={other}", "--quiet")


def _records(path):
    """A run file's records, wall-clock fields aside."""
    from bench.common import comparable

    text = path.read_text()
    return (
        [comparable(json.loads(line)) for line in text.splitlines()]
        if path.suffix == ".jsonl"
        else comparable(json.loads(text))
    )


def test_unknown_redo_phase_is_refused(smoke_run):
    with pytest.raises(NasEngineError, match="unknown phase 'nope' for --redo"):
        Run.open(smoke_run).redo("nope")


def test_a_run_directory_without_its_configuration_is_refused(smoke_run_copy):
    (smoke_run_copy / "config.toml").unlink()
    with pytest.raises(NasEngineError, match="holds a run's pretrain/ but no config.toml"):
        invoke("run", "--preset", "smoke", "--seed", "7", "--out", smoke_run_copy)
    assert not (smoke_run_copy / "config.toml").exists()  # the seed-0 results were not adopted as seed 7's
