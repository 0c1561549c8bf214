"""TensorBoard: every training phase and search writes its figures under RUN_DIR/tb/, once per step."""

import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from nasengine import registry
from nasengine.cli import cli
from nasengine.protocol import tensorboard as board_module
from nasengine.protocol.engine import Run
from nasengine.protocol.path_sampling import uniform_path
from nasengine.protocol.training import train
from nasengine.rundir.history import read_history
from nasengine.settings import config as configuration
from nasengine.settings.config import Schedule

TRAINING = {
    "pretrain": "loss",
    "pretrain/teacher": "loss",
    "pretrain/distill": "distill_loss",
    "finetune": "loss",
    "retrain/best/pretrain": "loss",
    "retrain/best/finetune": "loss",
    "retrain/shufflenetv2-20/pretrain": "loss",  # the teacher's, copied with its checkpoint
    "retrain/shufflenetv2-20/finetune": "loss",
}


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` as TensorBoard reads ``folder`` (resumed writers' purges applied)."""
    events = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_every_training_phase_writes_its_log_figures(distilled_run):
    for folder, loss in TRAINING.items():
        found = scalars(distilled_run / "tb" / folder)
        assert set(found) == {loss, "lr", "images_per_s"}, folder
        source = "pretrain/teacher" if folder == "retrain/shufflenetv2-20/pretrain" else folder
        log = [json.loads(line) for line in (distilled_run / source / "log.jsonl").read_text().splitlines()]
        for tag in (loss, "lr"):
            assert [step for step, _ in found[tag]] == [r["iteration"] for r in log], (folder, tag)
            assert [value for _, value in found[tag]] == pytest.approx([r[tag] for r in log], rel=1e-6)
        assert all(value > 0 for _, value in found["images_per_s"])


def test_every_search_writes_score_flops_and_best_so_far_per_candidate(distilled_run):
    for folder in ("search", "search-random"):
        history = read_history(distilled_run / folder / "history.jsonl")
        found = scalars(distilled_run / "tb" / folder)
        assert set(found) == {"score", "flops", "best_score"}
        steps = list(range(1, len(history) + 1))
        assert all([step for step, _ in found[tag]] == steps for tag in found), folder
        scores = [r["score"] for r in history]
        assert [v for _, v in found["score"]] == pytest.approx(scores, rel=1e-6)
        assert [v for _, v in found["flops"]] == pytest.approx([r["flops"] for r in history], rel=1e-6)
        best_so_far = [max(scores[: i + 1]) for i in range(len(scores))]
        assert [v for _, v in found["best_score"]] == pytest.approx(best_so_far, rel=1e-6)


def test_redo_deletes_the_tensorboard_folders_of_what_it_redoes(distilled_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(distilled_run, run_dir)
    Run.open(run_dir).redo("search")
    assert not (run_dir / "tb" / "search").exists() and not (run_dir / "tb" / "retrain").exists()
    assert (run_dir / "tb" / "search-random").exists()  # a comparison search does not depend on the search
    data = bytearray((run_dir / "finetune" / "checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (run_dir / "finetune" / "checkpoint.pt").write_bytes(bytes(data))
    Run.open(run_dir).redo("finetune")  # a corrupt checkpoint: fine-tuning restarts from its first step
    assert not list((run_dir / "tb" / "finetune").iterdir()) and not (run_dir / "tb" / "search-random").exists()
    Run.open(run_dir).redo("pretrain")  # verified checkpoints: nothing is trained again, the curves stay
    for folder in ("pretrain", "pretrain/teacher", "pretrain/distill"):
        assert scalars(run_dir / "tb" / folder), folder


def test_without_tensorboard_nothing_is_written_and_one_line_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the import fails as without the package
    monkeypatch.setattr(board_module, "_writer_class", None)  # as in a fresh process
    run = Run.create(tmp_path / "run", configuration.resolve("smoke"))
    run.pretrain()
    run.finetune()
    assert (tmp_path / "run" / "finetune" / "done.json").exists()
    assert not (tmp_path / "run" / "tb").exists()
    assert capsys.readouterr().out.count(board_module.OFF) == 1


def test_a_resumed_training_shows_each_step_once(tmp_path):
    space = registry.create("space", "shufflenet-small")
    task = registry.create("task", "fashion-mnist", image_size=32, search_size=64, calib_size=32)

    def run(stop_at=None):
        torch.manual_seed(0)
        supernet = space.build_supernet()
        model = task.build_model(supernet, space.out_channels)

        def paths(iteration):
            if iteration == stop_at:
                raise KeyboardInterrupt
            return [uniform_path(space.choices, 5, iteration)]

        schedule = Schedule(iterations=6, batch_size=8, lr=0.05, checkpoint_every=2)
        data = task.dataset("train", train=True)
        device = torch.device("cpu")
        train(
            model,
            task,
            data,
            schedule,
            tmp_path / "phase",
            seed=1,
            device=device,
            description="test",
            paths=paths,
            activate=supernet.activate,
            tensorboard=tmp_path / "tb",
        )

    with pytest.raises(KeyboardInterrupt):
        run(stop_at=5)  # steps 1-5 written, the checkpoint at 4: the resume writes 5 and 6 again
    # event files are read in name order, which is their creation second's: the resumed one must come second
    time.sleep(1 - time.time() % 1)
    run()
    assert len(list((tmp_path / "tb").iterdir())) == 2
    log = [json.loads(line) for line in (tmp_path / "phase" / "log.jsonl").read_text().splitlines()]
    found = scalars(tmp_path / "tb")
    assert [step for step, _ in found["loss"]] == [1, 2, 3, 4, 5, 6]
    assert [value for _, value in found["loss"]] == pytest.approx([r["loss"] for r in log], rel=1e-6)


def test_the_fault_benchmark_compares_every_file_but_tensorboards(tmp_path):
    """bench/faults.py compares a killed-and-resumed run with an uninterrupted one byte for byte, except
    tb/: event files hold wall times and their names the pid and start second."""
    spec = importlib.util.spec_from_file_location("faults", Path(__file__).parents[1] / "bench" / "faults.py")
    faults = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(faults)
    for name, pid in (("reference", 1), ("faulted", 2)):
        (tmp_path / name / "tb" / "pretrain").mkdir(parents=True)
        (tmp_path / name / "tb" / "pretrain" / f"events.out.tfevents.1.host.{pid}.0").write_bytes(bytes([pid]))
        (tmp_path / name / "report.png").write_bytes(b"same")
    assert faults.compare(tmp_path / "reference", tmp_path / "faulted") == []
    (tmp_path / "faulted" / "report.png").write_bytes(b"other")
    assert faults.compare(tmp_path / "reference", tmp_path / "faulted") == ["differs: report.png"]
