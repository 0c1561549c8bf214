"""Evolution against random search on the same supernet: the top-k curves, the second search, its report."""

import json
import math
import shutil

import pytest
from click.testing import CliRunner

import nasengine.protocol.search
from nasengine.cli import cli
from nasengine.errors import NasEngineError
from nasengine.protocol.engine import Run
from nasengine.rundir.history import read_history
from nasengine.settings import config as configuration
from nasengine.settings.config import SearchConfig
from nasengine.studies.search_compare import (
    budget_matched_options,
    candidates_to_reach,
    compare_scores,
    comparison_k,
    search_comparison,
    topk_curve,
)

COMPARE = ("--strategy", "random", "--budget-like", "evolution")
nan = math.nan


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def same(a, b):
    """Lists of floats equal, NaN equal to NaN."""
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or x == pytest.approx(y) for x, y in zip(a, b))


# --- the curves ---------------------------------------------------------------------------------
def test_topk_curve_is_nan_until_k_then_the_mean_of_the_best_k():
    assert same(topk_curve([1, 3, 2, 5, 4], 2), [nan, 2.0, 2.5, 4.0, 4.5])
    assert same(topk_curve([1, 3, 2, 5, 4], 3), [nan, nan, 2.0, 10 / 3, 4.0])
    assert topk_curve([2, 1, 4, 3], 1) == [2, 2, 4, 4]  # k = 1: the best so far
    assert topk_curve([], 3) == []


def test_topk_curve_never_lets_a_nan_score_into_the_top_k():
    assert same(topk_curve([nan, 1, 2], 2), [nan, nan, 1.5])
    assert same(topk_curve([5, nan, 1, nan], 2), [nan, nan, 3.0, 3.0])


def test_topk_curve_never_decreases_and_rejects_bad_k():
    scores = [0.3, 0.1, 0.9, 0.2, 0.5, 0.5, 0.05, 0.7, 0.6, 0.8]
    curve = topk_curve(scores, 3)[2:]
    assert all(a <= b for a, b in zip(curve, curve[1:]))
    assert curve[-1] == pytest.approx((0.9 + 0.8 + 0.7) / 3)
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            topk_curve(scores, k)


def test_candidates_to_reach_counts_from_one_and_says_never():
    curve = [nan, 2.0, 2.5, 4.0, 4.5]
    assert candidates_to_reach(curve, 4.0) == 4  # exactly equal counts as reached
    assert candidates_to_reach(curve, 4.2) == 5
    assert candidates_to_reach(curve, -100) == 2  # a NaN entry reaches nothing
    assert candidates_to_reach(curve, 4.6) is None
    assert candidates_to_reach(curve, nan) is None
    assert candidates_to_reach([], 0) is None


def test_compare_scores_reports_finals_and_candidates_needed():
    comparison = compare_scores({"evolution": [1, 2, 3, 4, 5, 6], "random": [3, 1, 2, 2, 1, 4]}, k=2)
    # top-2 curves: evolution nan 1.5 2.5 3.5 4.5 5.5, random nan 2 2.5 2.5 2.5 3.5
    assert comparison["k"] == 2
    assert comparison["lower_final"] == 3.5
    assert comparison["strategies"]["evolution"] == {
        "candidates": 6,
        "final_top_k_mean": 5.5,
        "to_reach_other_final": 4,
        "to_reach_lower_final": 4,
    }
    assert comparison["strategies"]["random"] == {
        "candidates": 6,
        "final_top_k_mean": 3.5,
        "to_reach_other_final": None,
        "to_reach_lower_final": 6,
    }


def test_compare_scores_with_too_few_scored_candidates_has_no_finals():
    comparison = compare_scores({"evolution": [nan, 1.0], "random": [2.0, 3.0]}, k=2)
    assert comparison["lower_final"] is None
    assert comparison["strategies"]["evolution"]["final_top_k_mean"] is None
    assert comparison["strategies"]["random"]["to_reach_other_final"] is None
    json.dumps(comparison, allow_nan=False)  # the summary stays valid JSON


def test_k_is_top_k_when_set_else_ten_capped_at_the_candidates():
    assert comparison_k(SearchConfig(strategy_options={"top_k": 3}), 24, 24) == 3
    assert comparison_k(SearchConfig(strategy_options={"top_k": 3}), 24, 2) == 2
    assert comparison_k(SearchConfig(), 50, 40) == 10
    assert comparison_k(SearchConfig(), 8, 7) == 7


def test_budget_matched_options_give_random_the_budget_of_evolution():
    search = SearchConfig(strategy="evolution", strategy_options={"population": 5, "top_k": 2, "generations": 3})
    options = budget_matched_options((4,) * 6, search, "random", "evolution", seed=0)
    assert options == {"population": 5, "generations": 3}
    with pytest.raises(NasEngineError, match="this run's search uses evolution"):
        budget_matched_options((4,) * 6, search, "random", "random", seed=0)
    with pytest.raises(NasEngineError, match="own search"):
        budget_matched_options((4,) * 6, search, "evolution", "evolution", seed=0)


# --- on a smoke run -----------------------------------------------------------------------------
def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# the smoke preset with one training iteration per phase and tiny search splits: the search's shape
# (evolution 4 x 2, top-2) is what these tests need, not a trained supernet
FAST_SMOKE = {
    "preset": "smoke",
    "pretrain_schedule": {"iterations": 1},
    "finetune_schedule": {"iterations": 1},
    "task_options": {"search_size": 2, "calib_size": 2},
}


@pytest.fixture(scope="module")
def searched_run(tmp_path_factory):
    """A smoke run through its evolution search (no retraining, to stay fast), then the random search."""
    out = tmp_path_factory.mktemp("runs") / "smoke"
    Run.create(out, configuration.resolve(overrides=FAST_SMOKE))
    for phase in ("pretrain", "finetune", "search"):
        invoke(phase, out, "--quiet")
    before = _files(out / "search")
    result = invoke("search", out, *COMPARE, "--quiet")
    return out, before, result.output


def test_random_search_gets_the_same_budget_and_leaves_the_search_alone(searched_run):
    out, before, output = searched_run
    evolution = read_history(out / "search" / "history.jsonl")
    random = read_history(out / "search-random" / "history.jsonl")
    assert len(evolution) == 4 * 2  # the smoke preset's population x generations
    assert len(random) == len(evolution)
    assert len({tuple(r["arch"]) for r in random}) == len(random)
    assert all(r["flops"] <= 300e6 for r in random)
    # the same seed: the first population is the same random draw; after that evolution breeds, random does not
    assert [r["arch"] for r in random[:4]] == [r["arch"] for r in evolution[:4]]
    assert [r["arch"] for r in random[4:]] != [r["arch"] for r in evolution[4:]]
    assert _files(out / "search") == before
    done = json.loads((out / "search-random" / "done.json").read_text())
    assert done["strategy"] == "random" and done["candidates"] == 8
    assert json.loads((out / "search-random" / "best.json").read_text())["strategy"] == "random"
    assert "evolution vs random search" in output


def test_the_report_plots_and_summarises_the_comparison(searched_run):
    out, _, _ = searched_run
    assert (out / "report" / "search_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "report" / "search_vs_random.png").exists()  # one figure of the curves: search_curve.png
    summary = json.loads((out / "report" / "summary.json").read_text())
    expected = compare_scores(
        {
            "evolution": [r["score"] for r in read_history(out / "search" / "history.jsonl")],
            "random": [r["score"] for r in read_history(out / "search-random" / "history.jsonl")],
        },
        k=2,
    )  # the smoke preset's top_k
    comparison = summary["search_vs_random"]
    assert comparison["k"] == 2
    for label in ("evolution", "random"):
        assert comparison["strategies"][label] == {
            **expected["strategies"][label],
            "folder": "search" if label == "evolution" else "search-random",
            "finished": True,
        }
    assert search_comparison(out) == comparison
    shown = invoke("show", out).output
    assert "evolution vs random search" in shown and "final top-2 mean" in shown


def test_an_interrupted_random_search_resumes_and_a_rerun_evaluates_nothing(searched_run, tmp_path, monkeypatch):
    out, before, _ = searched_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    history = copy / "search-random" / "history.jsonl"
    lines = history.read_text().splitlines()
    history.write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])  # died while writing the sixth
    for name in ("done.json", "best.json"):
        (copy / "search-random" / name).unlink()
    invoke("search", copy, *COMPARE, "--quiet")
    assert [json.loads(line)["arch"] for line in history.read_text().splitlines()] == [
        json.loads(line)["arch"] for line in lines
    ]

    def no_evaluation(*args, **kwargs):
        raise AssertionError("a candidate was evaluated again")

    monkeypatch.setattr(nasengine.protocol.search.CandidateEvaluator, "evaluate", no_evaluation)
    finished = history.read_bytes()
    invoke("search", copy, *COMPARE, "--quiet")  # done: skipped
    (copy / "search-random" / "done.json").unlink()
    invoke("search", copy, *COMPARE, "--quiet")  # not done: the history is replayed, nothing evaluated
    assert history.read_bytes() == finished
    assert (copy / "search-random" / "done.json").exists()
    assert _files(copy / "search") == before


def test_a_run_without_a_finished_finetune_says_what_to_run(tmp_path):
    out = tmp_path / "unfinished"
    Run.create(out, configuration.resolve(overrides={"preset": "smoke"}))
    result = CliRunner().invoke(cli, ["search", str(out), *COMPARE])
    assert result.exit_code != 0
    assert isinstance(result.exception, NasEngineError)
    message = str(result.exception)
    assert "\n" not in message
    assert f"nasengine finetune {out}" in message
    assert not (out / "search-random").exists() and not (out / "search").exists()
    for args, text in (
        (["--strategy", "random"], "needs --budget-like"),
        (["--budget-like", "evolution"], "with --strategy"),
        (["--strategy", "random", "--budget-like", "random"], "uses evolution"),
    ):
        result = CliRunner().invoke(cli, ["search", str(out), *args])
        assert isinstance(result.exception, NasEngineError) and text in str(result.exception), args
