"""The whole protocol at smoke size: run, resume, search replay, constraint, CLI, random baseline."""

import json
import re
import shutil

import pytest
import torch
from click.testing import CliRunner

from nasengine.cli import cli
from nasengine.rundir.history import read_history


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_smoke_run_writes_every_phase(smoke_run, smoke_run_output):
    out, output = smoke_run, smoke_run_output
    for phase in ("pretrain", "finetune", "search", "retrain"):
        assert (out / phase / "done.json").exists(), phase
    history = read_history(out / "search" / "history.jsonl")
    assert len(history) == 4 * 2  # population x generations
    assert len({tuple(r["arch"]) for r in history}) == len(history)  # never evaluated twice
    assert all(r["flops"] <= 300e6 for r in history)
    assert all({"calib_seconds", "score_seconds", "metrics", "generation", "params"} <= set(r) for r in history)
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert set(summary["retrain"]) == {"best", "shufflenetv2-20"}
    assert "AP" in summary["retrain"]["best"]["test"]
    assert (out / "report" / "search_progress.png").exists()
    assert "shufflenetv2-20" in output


def test_rerunning_a_finished_run_does_nothing_new(smoke_run_copy):
    out = smoke_run_copy
    before = (out / "search" / "history.jsonl").read_text()
    invoke("run", "--preset", "smoke", "--out", out, "--quiet")
    assert (out / "search" / "history.jsonl").read_text() == before


def test_interrupted_search_resumes_to_the_same_history(smoke_run, smoke_run_copy):
    out, copy = smoke_run, smoke_run_copy
    lines = (copy / "search" / "history.jsonl").read_text().splitlines()
    # the process died while writing the sixth record: five complete lines and a torn one remain
    (copy / "search" / "history.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])
    for name in ("done.json", "best.json"):
        (copy / "search" / name).unlink()
    shutil.rmtree(copy / "retrain")
    shutil.rmtree(copy / "report")
    invoke("search", copy, "--quiet")
    original = [json.loads(line) for line in lines]
    resumed = [json.loads(line) for line in (copy / "search" / "history.jsonl").read_text().splitlines()]
    assert [r["arch"] for r in resumed] == [r["arch"] for r in original]
    assert [r["score"] for r in resumed] == pytest.approx([r["score"] for r in original])
    assert (
        json.loads((copy / "search" / "best.json").read_text())["arch"]
        == json.loads((out / "search" / "best.json").read_text())["arch"]
    )


def test_same_out_with_other_config_is_refused(smoke_run):
    out = smoke_run
    result = CliRunner().invoke(cli, ["run", "--preset", "smoke", "--out", str(out), "--seed", "3"])
    assert result.exit_code != 0
    assert "holds a run with a different configuration (seed: 0 there, 3 now)" in str(result.exception)


def test_show_lists_phases_and_candidates(smoke_run):
    out = smoke_run
    output = invoke("show", out).output
    assert "search" in output and "done" in output
    assert "best 8 of 8 candidates" in output
    threads = torch.get_num_threads()
    assert f"layout: 1 process x {threads} torch thread{'s' if threads > 1 else ''}, fp32 training" in output
    generations = {record["generation"] for record in read_history(out / "search" / "history.jsonl")}
    assert generations == {0, 1} and "generation (1 = first)" in output  # counted from 1, as in the report
    rows = [line for line in output.splitlines() if re.match(r"\W*\d+\W+[0-3]", line)]
    assert {row.rstrip(" │|").split()[-1] for row in rows} == {"1", "2"}


def test_random_baseline_trains_and_tests_each_architecture(smoke_run, tmp_path):
    out = smoke_run
    baseline = tmp_path / "baseline"
    output = invoke(
        "random-baseline", "--preset", "smoke", "-n", "2", "--out", baseline, "--compare", out, "--quiet"
    ).output
    summary = json.loads((baseline / "random_baseline.json").read_text())
    assert summary["count"] == 2
    assert len({tuple(r["arch"]) for r in summary["results"]}) == 2
    assert all(r["flops"] <= 300e6 for r in summary["results"])
    assert summary["searched"]["arch"] == json.loads((out / "retrain" / "best" / "test.json").read_text())["arch"]
    assert "random (mean ± std)" in output and "searched" in output


def test_distill_run_reuses_its_teacher_as_the_baseline_pretraining(smoke_run, distilled_run):
    """The teacher is the baseline pre-trained exactly as its retraining would: the distilled run copies
    it, and it equals the baseline pre-trained from scratch in the uniform run."""
    from nasengine.rundir.checkpoint import load_checkpoint

    uniform, out = smoke_run, distilled_run
    for folder in ("pretrain/teacher", "pretrain/distill", "retrain/shufflenetv2-20/pretrain"):
        assert (out / folder / "checkpoint.pt").exists(), folder
    info = json.loads((out / "pretrain" / "done.json").read_text())
    assert info["distill"]["teacher"] == "shufflenetv2-20" and info["distill"]["iterations"] == 2
    reused = json.loads((out / "retrain" / "shufflenetv2-20" / "pretrain" / "done.json").read_text())
    assert reused["reused"] == "pretrain/teacher" and reused["seconds"] == 0.0
    copied = load_checkpoint(out / "retrain" / "shufflenetv2-20" / "pretrain" / "checkpoint.pt")["model"]
    fresh = load_checkpoint(uniform / "retrain" / "shufflenetv2-20" / "pretrain" / "checkpoint.pt")["model"]
    assert copied.keys() == fresh.keys() and all(torch.equal(copied[k], fresh[k]) for k in fresh)
