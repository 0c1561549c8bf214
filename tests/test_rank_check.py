"""`nasengine rank-check`: candidate selection, rank statistics, schedule scaling, and a resumable
check on a smoke run (nothing retrained on a rerun; the standalone network is the same when its
fine-tuning is redone after the pre-training was already done)."""

import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from nasengine.cli import cli
from nasengine.errors import NasEngineError
from nasengine.protocol.engine import Run
from nasengine.report.build import collect
from nasengine.rundir.checkpoint import load_checkpoint
from nasengine.rundir.history import read_history
from nasengine.settings import config as configuration
from nasengine.settings.config import Schedule, scale_schedule
from nasengine.studies.rank_check import (
    candidate_dir,
    plot_rank_check,
    rank_agreement_line,
    rank_statistics,
    ranks,
    select_candidates,
)


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


# --- statistics -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "standalone, tau, rho",
    [
        ([0.1, 0.2, 0.3, 0.4], 1.0, 1.0),  # concordant
        ([0.1, 0.3, 0.2, 0.4], 2 / 3, 0.8),  # one adjacent pair swapped: (5 - 1) / 6; 1 - 6*2/60
        ([0.4, 0.3, 0.2, 0.1], -1.0, -1.0),  # reversed
    ],
)
def test_rank_statistics_known_values(standalone, tau, rho):
    stats = rank_statistics([1.0, 2.0, 3.0, 4.0], standalone)
    assert not stats["degenerate"] and stats["message"] is None and stats["n"] == 4
    assert stats["tau"] == pytest.approx(tau)
    assert stats["rho"] == pytest.approx(rho)
    assert 0.0 <= stats["tau_p"] <= 1.0 and 0.0 <= stats["rho_p"] <= 1.0
    assert f"{tau:+.3f}" in rank_agreement_line(stats)


def test_perfect_agreement_of_many_points_is_significant():
    x = list(range(10))
    stats = rank_statistics(x, [v * v for v in x])  # monotone: same ranking
    assert stats["tau"] == pytest.approx(1.0) and stats["tau_p"] < 0.001


@pytest.mark.parametrize(
    "supernet, standalone, reason",
    [
        ([1.0, 2.0], [1.0, 2.0], "at least 3"),
        ([], [], "at least 3"),
        ([0.0, 0.0, 0.0], [0.1, 0.2, 0.3], "supernet scores are all equal"),
        ([0.1, 0.2, 0.3], [0.5, 0.5, 0.5], "standalone scores are all equal"),
        ([0.1, float("nan"), 0.3], [0.1, 0.2, 0.3], "not finite"),
    ],
)
def test_degenerate_inputs_give_nan_and_a_reason(supernet, standalone, reason):
    stats = rank_statistics(supernet, standalone)
    assert stats["degenerate"] and reason in stats["message"]
    assert all(math.isnan(stats[key]) for key in ("tau", "tau_p", "rho", "rho_p"))
    assert "n/a" in rank_agreement_line(stats) and reason in rank_agreement_line(stats)


def test_ranks_are_one_for_the_best_and_shared_on_ties():
    assert ranks([0.2, 0.9, 0.5, 0.5]) == [4, 1, 2, 2]


# --- selection ------------------------------------------------------------------------------------
def _history(scores):
    return [{"arch": [i // 4, i % 4], "score": s} for i, s in enumerate(scores)]


def test_selection_spreads_over_the_ranks_and_keeps_best_and_worst():
    scores = [i / 100 for i in range(20)]
    random.Random(3).shuffle(scores)
    chosen = select_candidates(_history(scores), 5)
    picked = [c["score"] for c in chosen]
    assert picked[0] == max(scores) and picked[-1] == min(scores)
    assert picked == sorted(picked, reverse=True)
    order = sorted(scores, reverse=True)
    positions = [order.index(s) for s in picked]
    assert positions == [0, 5, 10, 14, 19]  # rank quantiles 0, 1/4, 1/2, 3/4, 1 of 20
    assert len({tuple(c["arch"]) for c in chosen}) == 5
    assert select_candidates(_history(scores), 5) == chosen  # deterministic


def test_selection_takes_all_when_history_is_short_and_skips_repeats():
    history = _history([0.3, 0.1, 0.2])
    history.append({"arch": [0, 1], "score": 0.9})  # the same architecture again: counted once
    chosen = select_candidates(history, 8)
    assert [c["score"] for c in chosen] == [0.3, 0.2, 0.1]


def test_selection_with_equal_scores_is_distinct_and_in_evaluation_order():
    chosen = select_candidates(_history([0.0] * 9), 3)
    assert [c["arch"] for c in chosen] == [[0, 0], [1, 0], [2, 0]]  # ranks 0, 4, 8


def test_selection_needs_two_candidates():
    with pytest.raises(NasEngineError, match="at least 2"):
        select_candidates(_history([0.1, 0.2]), 1)


# --- schedules ------------------------------------------------------------------------------------
def test_schedule_scale_shortens_iterations_and_warmup_and_keeps_fractions():
    schedule = Schedule(iterations=220, batch_size=8, lr_schedule="step", milestones=[0.8], warmup_iterations=20)
    half = scale_schedule(schedule, 0.5)
    assert (half.iterations, half.warmup_iterations, half.milestones) == (110, 10, [0.8])
    assert scale_schedule(Schedule(iterations=3, batch_size=2), 0.5).iterations == 2
    assert scale_schedule(Schedule(iterations=3, batch_size=2), 0.01).iterations == 1  # at least one
    assert scale_schedule(schedule, 1.0) is schedule
    for bad in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(NasEngineError, match=r"--schedule-scale must be in \(0, 1\]"):
            scale_schedule(schedule, bad)


def test_plot_of_a_non_degenerate_check(tmp_path):
    candidates = [
        {"supernet_score": s, "standalone_score": t, "supernet_rank": r}
        for r, (s, t) in enumerate([(0.3, 0.2), (0.2, 0.25), (0.1, 0.05)], 1)
    ]
    summary = {
        **rank_statistics([c["supernet_score"] for c in candidates], [c["standalone_score"] for c in candidates]),
        "schedule_scale": 1.0,
        "candidates": candidates,
    }
    plot_rank_check(summary, tmp_path / "rank_check.png")
    assert (tmp_path / "rank_check.png").stat().st_size > 1000


# --- on a smoke run -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def searched_run(smoke_run, tmp_path_factory):
    """This module's copy of the shared smoke run, for rank checks (they write into their run)."""
    return Path(shutil.copytree(smoke_run, tmp_path_factory.mktemp("runs") / "smoke"))


def _files(directory):
    return {p: p.stat().st_mtime_ns for p in sorted(directory.rglob("*")) if p.is_file()}


def test_rank_check_trains_each_candidate_once_and_resumes(searched_run):
    out = searched_run
    first = invoke("rank-check", out, "-n", 3, "--schedule-scale", 0.5, "--no-baseline", "--quiet").output
    result = json.loads((out / "report" / "rank_check.json").read_text())
    progress = [line for line in first.splitlines() if line.startswith("rank-check ")]
    assert progress == [f"rank-check {i}/3: {c['arch_text']}" for i, c in enumerate(result["candidates"], 1)]
    assert (out / "report" / "rank_check.png").stat().st_size > 1000
    assert result["n"] == 3 and result["schedule_scale"] == 0.5
    history = read_history(out / "search" / "history.jsonl")
    archs = [c["arch"] for c in result["candidates"]]
    assert archs == [c["arch"] for c in select_candidates(history, 3)]
    assert len({tuple(a) for a in archs}) == 3
    assert archs[0] == json.loads((out / "search" / "best.json").read_text())["arch"]
    for candidate in result["candidates"]:
        assert {"arch", "arch_text", "flops", "supernet_score", "standalone_score"} <= set(candidate)
        folder = candidate_dir(out, candidate["arch"], 0.5)
        # smoke schedules: 4 pre-training and 3 fine-tuning iterations, halved (rounded, half up)
        assert json.loads((folder / "pretrain" / "done.json").read_text())["iterations"] == 2
        assert json.loads((folder / "finetune" / "done.json").read_text())["iterations"] == 2
        assert json.loads((folder / "test.json").read_text())["test"]["score"] == candidate["standalone_score"]
    assert {"tau", "tau_p", "rho", "rho_p"} <= set(result)  # smoke scores are all 0: null with a message
    assert result["degenerate"] == (result["tau"] is None) and (result["message"] is None) != result["degenerate"]

    files, text = _files(out / "rank_check"), (out / "report" / "rank_check.json").read_text()
    again = invoke("rank-check", out, "-n", 3, "--schedule-scale", 0.5, "--no-baseline", "--quiet").output
    assert "pretrain rank-check" not in again and "finetune rank-check" not in again  # nothing trained
    assert _files(out / "rank_check") == files
    assert (out / "report" / "rank_check.json").read_text() == text

    shown = invoke("show", out).output
    assert "rank check (schedules x0.5)" in shown and "n=3" in shown
    assert collect(out)["rank_check"] == json.loads(text)


def test_redone_finetuning_after_done_pretraining_gives_the_same_network(searched_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(searched_run, copy)
    result = json.loads((copy / "report" / "rank_check.json").read_text())
    folder = candidate_dir(copy, result["candidates"][-1]["arch"], 0.5)
    before = load_checkpoint(folder / "finetune" / "checkpoint.pt")["model"]
    shutil.rmtree(folder / "finetune")
    (folder / "test.json").unlink()
    output = invoke("rank-check", copy, "-n", 3, "--schedule-scale", 0.5, "--no-baseline", "--quiet").output
    assert "finetune rank-check 3/3" in output and "pretrain rank-check" not in output
    after = load_checkpoint(folder / "finetune" / "checkpoint.pt")["model"]
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert json.loads((copy / "report" / "rank_check.json").read_text()) == result


def test_run_without_finished_search_is_one_line_error(tmp_path):
    Run.create(tmp_path / "fresh", configuration.resolve(preset="smoke"))
    result = CliRunner().invoke(cli, ["rank-check", str(tmp_path / "fresh")])
    assert isinstance(result.exception, NasEngineError)
    message = str(result.exception)
    assert "has no finished search" in message and f"nasengine search {tmp_path / 'fresh'}" in message
    assert "\n" not in message


def test_bad_schedule_scale_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["rank-check", str(tmp_path), "--schedule-scale", "1.5"])
    assert result.exit_code == 2 and "--schedule-scale" in result.output


@pytest.fixture(scope="module")
def classification_search(tmp_path_factory):
    """A smoke run searched on its classification supernet: scores (accuracy) differ between paths."""
    out = tmp_path_factory.mktemp("runs") / "cls"
    run = Run.create(out, configuration.resolve(preset="smoke", overrides={"search": {"on": "classification"}}))
    run.pretrain()
    run.search()
    return out


def test_a_path_scored_on_the_supernet_gets_exactly_its_search_score(classification_search):
    run = Run.open(classification_search)
    history = read_history(run.layout.history())
    assert len({r["score"] for r in history}) > 1  # a check that could fail: the scores differ
    for record in history[:2]:
        rescored = run.score_on_supernet(tuple(record["arch"]))
        assert (rescored["score"], rescored["metrics"]) == (record["score"], record["metrics"])


def test_the_baseline_joins_the_rank_check_scored_as_the_search_would(classification_search):
    out = classification_search
    invoke("rank-check", out, "-n", 2, "--schedule-scale", 0.5, "--quiet")
    result = json.loads((out / "report" / "rank_check.json").read_text())
    run = Run.open(out)
    baseline = tuple(run.space.named[run.space.baseline_name])
    assert result["n"] == 3 and [c.get("baseline") for c in result["candidates"]] == [None, None, "shufflenetv2-20"]
    entry = result["candidates"][-1]
    assert tuple(entry["arch"]) == baseline and baseline not in {
        tuple(r["arch"]) for r in read_history(run.layout.history())
    }
    kept = candidate_dir(out, baseline, 0.5) / "supernet_score.json"
    assert entry["supernet_score"] == json.loads(kept.read_text())["score"] == run.score_on_supernet(baseline)["score"]
    assert (candidate_dir(out, baseline, 0.5) / "test.json").is_file()  # trained alone at the same scale
    before = kept.stat().st_mtime_ns
    again = invoke("rank-check", out, "-n", 2, "--schedule-scale", 0.5, "--quiet").output
    assert "scoring the baseline" not in again and kept.stat().st_mtime_ns == before  # scored once
