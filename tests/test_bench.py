"""Every bench run on a tiny fixture through its ``main(argv)``: the session's smoke run (``conftest.smoke_run``)
and a copy of it with a rank check, for the benches that need one. Each test asserts on what the bench prints or
writes, and that it writes nothing into the run directory it reads."""

import io
import json
import os
import re
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch

from bench import (
    common,
    corruption,
    detection_throughput,
    faults,
    fidelity,
    flops_lookup,
    latency,
    rank_check_reliability,
    rescore_rank_check,
    retrain_variants,
    search_throughput,
    supernet_recipes,
)
from bench.common import run_key
from nasengine.rundir.layout import RunLayout
from nasengine.rundir.manifest import write_done
from nasengine.rundir.records import read_json
from nasengine.settings import config as configuration
from nasengine.studies.rank_check import run_rank_check


def files(folder: Path) -> dict[str, float]:
    """Every file under ``folder`` with its modification time."""
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*") if p.is_file()}


def flat(text: str) -> str:
    """``text`` with every run of whitespace one space: rich wraps a table's title to the table's width."""
    return " ".join(text.split())


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch):
    """Rich lays tables out for the COLUMNS it is told, so that no cell asserted on is wrapped."""
    monkeypatch.setenv("COLUMNS", "250")


FIDELITY = ["--seeds", "0", "--preset", "smoke", "--rank-n", "2", "--rank-scale", "0.5", "--noise-draws", "2"]


def test_fidelity_reads_a_run_and_caches_its_noise_in_its_own_folder(smoke_run, tmp_path):
    before = files(smoke_run)
    runs, out = tmp_path / "runs", tmp_path / "fidelity"
    runs.mkdir()
    (runs / "seed0").symlink_to(smoke_run)  # --from-existing only reads it
    said, shown = io.StringIO(), io.StringIO()
    with redirect_stderr(said), redirect_stdout(shown):
        fidelity.main(["--runs", str(runs), "--out", str(out), "--from-existing", *FIDELITY])
    printed = shown.getvalue()
    assert "rescoring the best candidate (2 calib subsets + 2 reruns)" in said.getvalue()
    assert "fidelity of the smoke preset" in printed and f"numbers: {out / 'fidelity.json'}" in printed
    numbers = read_json(out / "fidelity.json")
    assert numbers["seeds"] == [0] and numbers["draw_seed"] == 0 and numbers["failures"] == {"0": []}
    measures = {key: value["seeds"]["0"] for key, value in numbers["measures"].items()}
    assert set(measures) == set(fidelity.LABELS)
    unmeasured = {key: cell["reason"] for key, cell in measures.items() if "reason" in cell}
    assert set(unmeasured) == {"rank", "baseline_rank", "ea_vs_random", "reach"}, unmeasured
    assert "rank_check.json does not exist" in unmeasured["rank"]
    assert "search-random" in unmeasured["ea_vs_random"]
    assert measures["rescore"]["rerun_matches"] and len(measures["noise"]["scores"]) == 2
    assert measures["rescore"]["draw_seeds"] == [[0, 1, 1000], [0, 1, 1001]]
    assert measures["distinct"]["candidates"] == 8  # the smoke preset's evolution: 4 x 2
    assert set(measures["wall_time"]["parts"]) >= {"pretrain", "finetune", "search", "retrain/best/finetune"}
    assert measures["loss_ratio"]["baseline_name"] == measures["winner"]["baseline_name"] == "shufflenetv2-20"
    for label in ("run wall time", "pretrain loss: supernet / baseline", "rank check: Kendall τ (p), Spearman ρ"):
        assert label in printed
    cache = read_json(out / "noise" / f"{run_key(runs / 'seed0')}.json")
    assert cache["key"]["run"] == str(smoke_run.resolve()) and cache["key"]["draw_seed"] == 0
    assert sorted(p.name for p in out.iterdir()) == ["fidelity.json", "noise"]
    assert files(smoke_run) == before

    said, shown = io.StringIO(), io.StringIO()
    with redirect_stderr(said), redirect_stdout(shown):
        fidelity.main(["--runs", str(runs), "--out", str(out), "--from-existing", *FIDELITY])
    assert "rescoring" not in said.getvalue(), "the noise measure was not read from its cache"
    assert shown.getvalue().split("numbers:")[0] == printed.split("numbers:")[0]


def test_fidelity_refuses_check_seeds_outside_its_seeds(capsys):
    with pytest.raises(SystemExit):
        fidelity.main(["--seeds", "0,1", "--check-seeds", "2"])
    assert "--check-seeds 2 not among --seeds 0,1" in capsys.readouterr().err


@pytest.fixture(scope="module")
def checked_runs(smoke_run, tmp_path_factory) -> tuple[Path, str]:
    """``bench.fidelity`` on a copy of the smoke run: it runs the random search and a 2-network rank check
    there (``nasengine`` subprocesses) and measures everything. Its runs folder and what it printed."""
    runs = tmp_path_factory.mktemp("checked")
    shutil.copytree(smoke_run, runs / "seed0")
    printed = io.StringIO()
    with redirect_stdout(printed):
        fidelity.main(["--runs", str(runs), *FIDELITY])
    return runs, printed.getvalue()


@pytest.fixture(scope="module")
def checked_run(smoke_run, tmp_path_factory) -> Path:
    """A copy of the smoke run with a rank check of 2 networks and the baseline at half schedules."""
    run = tmp_path_factory.mktemp("ranked") / "seed0"
    shutil.copytree(smoke_run, run)
    run_rank_check(run, count=2, schedule_scale=0.5)
    return run


@pytest.mark.slow
def test_fidelity_runs_the_rank_check_and_the_random_search(checked_runs):
    runs, printed = checked_runs
    numbers = read_json(runs / "fidelity.json")
    assert numbers["failures"] == {"0": []}
    measures = {key: value["seeds"]["0"] for key, value in numbers["measures"].items()}
    assert not {key: cell["reason"] for key, cell in measures.items() if "reason" in cell}
    assert measures["rank"]["n"] == 3 and measures["rank"]["schedule_scale"] == 0.5  # 2 and the baseline
    assert measures["baseline_rank"]["n"] == 3 and measures["ea_vs_random"]["k"] == 2
    assert sorted(p.name for p in (runs / "logs").iterdir()) == ["seed0-rank-check.log", "seed0-search-random.log"]
    assert (runs / "noise" / f"{run_key(runs / 'seed0')}.json").exists()
    assert not list((runs / "seed0").rglob("fidelity*")), "the bench wrote into the run directory"
    assert "evolution vs random: top-k mean" in printed


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")  # smoke networks may all score 0
def test_rescore_rank_check_prints_tau_and_rho_per_setting(checked_run, capsys):
    before = files(checked_run)
    rescore_rank_check.main([str(checked_run), "--calib-size", "2", "--adapt-iterations", "1"])
    printed = flat(capsys.readouterr().out)
    for row in ("run's own scores", "calib_size=2", "adapted 1 it. (lr 0.01)", "fewer parameters (no supernet)"):
        assert row in printed
    assert "3 rank-check networks, supernet score vs standalone test score" in printed
    assert files(checked_run) == before


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")  # smoke networks may all score 0
def test_rank_check_reliability_trains_again_in_its_own_folder(checked_run, tmp_path, capsys):
    before = files(checked_run)
    rank_check_reliability.main([str(checked_run), "--out", str(tmp_path)])
    printed = flat(capsys.readouterr().out)
    for row in ("training seed 0 and seed 1000", "supernet and seed 0 (the rank check)", "supernet and the mean"):
        assert row in printed
    assert "standalone score: mean |seed 0 − seed 1000|" in printed
    reseeded = tmp_path / run_key(checked_run) / "seed1000"
    assert configuration.load(RunLayout(reseeded).config).seed == 1000
    assert len(list((reseeded / "rank_check").glob("*-s0.5/test.json"))) == 3
    assert files(checked_run) == before


def test_retrain_variants_fine_tunes_again_in_its_own_folder(smoke_run, tmp_path, capsys):
    before = files(smoke_run)
    retrain_variants.main([str(smoke_run), "--variant", "x0.5", "--out", str(tmp_path)])
    printed = flat(capsys.readouterr().out)
    assert "test score per fine-tuning variant (the run's: 3 it. × 2, lr 0.01)" in printed
    assert "run's own" in printed and "x0.5" in printed and "winner − baseline" in printed
    variant = RunLayout(tmp_path / run_key(smoke_run) / "x0.5")
    assert configuration.load(variant.config).finetune_schedule.iterations == 2
    for entry in read_json(RunLayout(smoke_run).retrain / "summary.json"):
        assert read_json(variant.retrain_phase(entry, "finetune") / "done.json")["iterations"] == 2
        assert variant.retrain_test(entry).exists()
    assert files(smoke_run) == before


def test_retrain_variants_refuses_a_bad_variant(smoke_run, tmp_path):
    with pytest.raises(SystemExit, match="variant 'y2': part 'y2' is not"):
        retrain_variants.main([str(smoke_run), "--variant", "y2", "--out", str(tmp_path)])
    assert not tmp_path.joinpath(run_key(smoke_run)).exists()


def test_search_throughput_from_a_run_history(smoke_run, capsys):
    search_throughput.main([str(smoke_run)])
    printed = flat(capsys.readouterr().out)
    assert f"8 candidates, history of {smoke_run}" in printed
    assert "candidates per minute (mean / median time)" in printed and "whole detector" not in printed


def test_search_throughput_on_a_fresh_supernet(capsys):
    search_throughput.main(["--preset", "smoke", "--candidates", "1"])
    printed = flat(capsys.readouterr().out)
    assert "1 candidates, fresh supernet, smoke preset task settings" in printed
    assert "BN recalibration of 4 images: whole detector / stopped after the backbone" in printed


def test_detection_throughput_measures_the_chosen_tasks(capsys):
    detection_throughput.main(["--tasks", "coco-retinanet", "--steps", "1", "--eval-batches", "1"])
    printed = flat(capsys.readouterr().out)
    assert "Detection throughput on the embedded data" in printed
    assert "coco-retinanet" in printed and "coco-fpn" not in printed


def test_flops_lookup_agrees_with_the_trace_and_restores_threads_and_cache(capsys):
    threads, cache = torch.get_num_threads(), os.environ.get("NASENGINE_CACHE")
    flops_lookup.main(["--spaces", "shufflenet-small", "--lookups", "20", "--traces", "2"])
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if "shufflenet-small" in line)
    assert "detnas-coco-fpn-300m" in row and row.count("288,082,368") == 2 and "yes" in row
    assert "shufflenet-large" not in printed
    assert torch.get_num_threads() == threads and os.environ.get("NASENGINE_CACHE") == cache


def test_latency_bench_compares_the_table_with_whole_networks(tmp_path, capsys):
    threads = torch.get_num_threads()
    latency.main(["--archs", "3", "--image-size", "32", "--onnx", "--passes", "2", "--out", str(tmp_path)])
    printed = flat(capsys.readouterr().out)
    assert "shufflenet-small at 32px, batch 1, 1 thread(s)" in printed and "8 backbones" in printed
    rows = re.findall(r"(torch eager|onnxruntime) │ (latency table|FLOPs|the same, measured again)", printed)
    assert set(rows) == {
        ("torch eager", "the same, measured again"),
        ("torch eager", "latency table"),
        ("torch eager", "FLOPs"),
        ("onnxruntime", "latency table"),
        ("onnxruntime", "FLOPs"),
    }
    results = read_json(tmp_path / "results.json")
    assert len(results["archs"]) == 8 and results["archs"][0]["name"] == "detnas-coco-fpn-300m"
    assert all(r["measured_ms"] > 0 and r["onnxruntime_ms"] > 0 and r["predicted_ms"] > 0 for r in results["archs"])
    assert read_json(tmp_path / "table.json")["image_size"] == 32
    assert torch.get_num_threads() == threads


def test_supernet_recipes_pretrain_each_recipe_into_its_out(tmp_path, capsys):
    supernet_recipes.main(["--preset", "smoke", "--iterations", "4", "--recipes", "distill", "--out", str(tmp_path)])
    printed = flat(capsys.readouterr().out)
    assert "supernet pre-training recipes (smoke preset, 4 iterations of 8 images)" in printed
    assert "standalone all-3x3" in printed and "distill, block-wise relative MSE per 50 iterations:" in printed
    results = read_json(tmp_path / "recipes.json")
    assert set(results) == {"distill", "standalone"}
    assert len(results["distill"]["curve"]) == 1 and len(results["distill"]["top1"]) == 6
    assert len(results["distill"]["block_loss"]) == 1 and len(results["standalone"]["curve"]) == 1
    assert (tmp_path / "distill" / "pretrain" / "teacher" / "done.json").exists()


def tree(source: Path, target: Path, names: list[str]) -> Path:
    for name in names:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target / name)
    return target


def test_faults_compare_finds_differences_but_not_wall_clock_ones(smoke_run, tmp_path):
    assert faults.phase_in_progress(smoke_run) == "report"
    assert common.compare(smoke_run, smoke_run) == []
    names = ["config.toml", "search/history.jsonl", "search/done.json", "pretrain/log.jsonl", "pretrain/supernet.pt"]
    names += ["pretrain/done.json", "finetune/done.json"]  # what search/done.json was made from
    reference = tree(smoke_run, tmp_path / "reference", names)
    faulted = tree(smoke_run, tmp_path / "faulted", names)
    done = json.loads((faulted / "search/done.json").read_text())
    write_done(faulted / "search", {**done, "seconds": done["seconds"] + 1})  # another run's wall clock
    assert common.compare(reference, faulted) == []

    write_done(faulted / "search", {**done, "candidates": -1})
    with (faulted / "pretrain/log.jsonl").open("a") as log:
        log.write('{"iteration": 5, "lo')  # a torn last line
    (faulted / "extra.json").write_text("{}")
    torch.save({"model": {"w": torch.zeros(1)}}, faulted / "pretrain/supernet.pt")
    (faulted / "config.toml").unlink()
    problems = common.compare(reference, faulted)
    assert problems[:2] == ["only in the reference: config.toml", "only in the faulted run: extra.json"]
    assert problems[2].startswith("differs: pretrain/log.jsonl (") and "torn line" in problems[2]
    assert problems[3].startswith("differs: pretrain/supernet.pt (")
    assert problems[4:] == ["differs: search/done.json"]


@pytest.mark.slow
def test_faults_kills_a_run_and_compares_every_file(tmp_path, capsys):
    status = faults.main(["--kills", "1", "--out", str(tmp_path / "faults")])
    printed = capsys.readouterr().out
    rounds = re.findall(r"^faulted-\d+: (\d) kill\(s\), (.+)$", printed, re.MULTILINE)  # more when a kill came late
    assert sum(int(kills) for kills, _ in rounds) == 1 and "1 kills over" in printed
    assert [verdict for _, verdict in rounds] == ["identical to the uninterrupted run"] * len(rounds)
    assert status == 0 and read_json(tmp_path / "faults" / "faults.json")["differences"] == 0


@pytest.mark.slow
def test_faults_kills_one_rank_of_two_and_the_restarted_group_ends_identical(tmp_path, capsys):
    status = faults.main(["--procs", "2", "--kill-rank", "1", "--kills", "2", "--out", str(tmp_path / "faults")])
    printed = capsys.readouterr().out
    finished = r"^round 0: rank 1 killed \d time\(s\) \(during .+\), finished by itself$"
    assert re.search(finished, printed, re.MULTILINE), printed
    assert "faulted-0: " in printed and "identical to the uninterrupted run" in printed and "HUNG" not in printed
    result = read_json(tmp_path / "faults" / "faults.json")
    assert status == 0 and result["differences"] == 0 and result["hangs"] == 0 and result["kills"]


@pytest.mark.slow
def test_corruption_damages_copies_of_a_run_and_follows_the_hints(smoke_run, tmp_path, capsys):
    out = tmp_path / "corruption"
    arguments = ["--reference", str(smoke_run), "--files", "report/done.json,config.toml", "--damages", "delete"]
    status = corruption.main([*arguments, "--commands", "show", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "2 files x 1 damages x 1 commands = 2 cases" in printed and "RESULT: 2 cases, 0 silent or crashed" in printed
    cases = {(case["file"], case["damage"], case["command"]): case for case in read_json(out / "matrix.json")["cases"]}
    deleted_report = cases["report/done.json", "delete", "show"]
    assert deleted_report["outcome"] == "error, hint works" and deleted_report["hint"].startswith("nasengine report ")
    assert all(case["outcome"].startswith("error") for case in cases.values()), cases
    assert status == 0 and not list((out / "cases").rglob("*.json"))  # each case's copy removed when classified


def test_faults_compares_the_report_page_without_its_wall_clock_seconds():
    page = "# nasengine report: run\n\n| phase | work | seconds |\n|---|---|---|\n| pretrain | 4 iterations | 1.1 |\n"
    later = page.replace("| 1.1 |", "| 0.9 |")
    assert common.comparable_markdown(page) == common.comparable_markdown(later)
    assert common.comparable_markdown(page) != common.comparable_markdown(later.replace("4 iterations", "5 iterations"))


@pytest.mark.slow
def test_layouts_times_a_step_per_layout(capsys):
    from bench import layouts

    layouts.main(["--steps", "2", "--only", "1,4"])
    printed = capsys.readouterr().out
    assert "one process, " in printed and "2 data-parallel ranks, 1 thread each (flat" in printed
    assert "1.00×" in printed and "side by side" not in printed  # only the rows asked for


@pytest.mark.slow
def test_gpu_check_runs_the_cpu_layouts_and_checks_exactness(tmp_path, capsys):
    from bench import gpu_check

    status = gpu_check.main(["--precisions", "fp32", "--out", str(tmp_path / "gpu")])
    printed = " ".join(capsys.readouterr().out.split())
    assert status == 0, printed
    assert "procs1-fp32" in printed and "procs2-fp32" in printed and "CPU (gloo" in printed
    assert "repeat equal" in printed and "baseline equal" in printed and "differs" not in printed
