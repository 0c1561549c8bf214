"""bench.common: the benches' shared arguments, rank-check loading, agreement cells and nasengine subprocess."""

import argparse
from pathlib import Path

import pytest

from bench import common
from nasengine.rundir.layout import RunLayout
from nasengine.rundir.records import write_json


def parser_with(add, *args) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add(parser, *args)
    return parser


def test_run_dir_argument_defaults_to_the_fidelity_bench_seed_0():
    parser = parser_with(common.add_run_dir_argument, "a run")
    assert parser.parse_args([]).run_dir == Path("runs/fidelity/seed0") == common.DEFAULT_RUN_DIR
    assert parser.parse_args(["runs/demo"]).run_dir == Path("runs/demo")


def test_out_argument_defaults_under_runs_bench(tmp_path):
    assert parser_with(common.add_out_argument, "fidelity").parse_args([]).out == Path("runs/bench/fidelity")
    assert parser_with(common.add_out_argument, "faults", Path("runs/faults")).parse_args([]).out == Path("runs/faults")
    assert parser_with(common.add_out_argument, "x").parse_args(["--out", str(tmp_path)]).out == tmp_path


def test_out_argument_refuses_a_run_directory_and_any_folder_inside_one(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    RunLayout(run).config.write_text("")
    parser = parser_with(common.add_out_argument, "x")
    for inside in (run, run / "report" / "bench"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--out", str(inside)])
        assert f"the run directory {run.resolve()}" in capsys.readouterr().err
    assert parser.parse_args(["--out", str(tmp_path / "bench")]).out == tmp_path / "bench"


def test_run_key_is_stable_and_tells_runs_apart(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "seed0"
    run.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    key = common.run_key(run)
    assert key.startswith("seed0-") and "/" not in key
    assert common.run_key(Path("runs/seed0")) == common.run_key(Path("runs/../runs/seed0")) == key
    assert common.run_key(tmp_path / "other" / "seed0") != key


def test_rank_check_result_and_candidates(tmp_path):
    with pytest.raises(SystemExit, match="run `nasengine rank-check"):
        common.rank_check_result(tmp_path)
    candidates = [{"arch": [0, 1], "supernet_score": 0.5, "standalone_score": 0.25}]
    result = RunLayout(tmp_path).rank_check_result
    result.parent.mkdir()
    write_json({"n": 1, "candidates": candidates}, result)
    assert common.rank_check_result(tmp_path)["n"] == 1
    assert common.rank_check_candidates(tmp_path) == candidates


def test_agreement_cells_give_tau_and_rho_with_their_p_values():
    tau, rho = common.agreement_cells([1, 2, 3, 4], [10, 20, 30, 40])
    assert tau.startswith("+1.00 (") and rho.startswith("+1.00 (")
    tau, rho = common.agreement_cells([1, 2, 3, 4], [4, 3, 2, 1])
    assert tau.startswith("-1.00 (") and rho.startswith("-1.00 (")


def test_run_nasengine_reports_success_and_failure(tmp_path, capsys):
    assert common.run_nasengine(["--version"], tmp_path / "logs" / "version.log", bench="test") is None
    assert "version" in (tmp_path / "logs" / "version.log").read_text()
    failure = common.run_nasengine(["no-such-command"], tmp_path / "logs" / "bad.log", bench="test")
    assert failure is not None and failure.startswith("'nasengine no-such-command' failed (exit 2)")
    err = capsys.readouterr().err
    assert "[test] nasengine --version" in err and "[test]   failed (exit 2)" in err


def test_chosen_names_must_be_known():
    parser = argparse.ArgumentParser()
    assert common.chosen(parser, "--tasks", "a,c", ["a", "b", "c"]) == ["a", "c"]
    with pytest.raises(SystemExit):
        common.chosen(parser, "--tasks", "a,x", ["a", "b"])


def test_timed_costs_are_compared_like_wall_clock_fields():
    from bench.common import comparable, comparable_markdown

    record = {"arch": [0], "costs": {"latency": 7.05}, "measured": {"latency": 5.59}, "within": True}
    assert comparable(record) == {"arch": [0], "costs": {"latency": 7.05}}
    page = "\n".join(
        [
            "| network | constraint | predicted | measured | limit | within |",
            "|---|---|---|---|---|---|",
            "| best | latency | {predicted} | {measured} | ≤ 7.50 ms | yes |",
            "",
            "| a | b |",
            "| 1 | 2 |",
        ]
    )
    one = comparable_markdown(page.format(predicted="7.05 ms", measured="5.59 ms"))
    assert one == comparable_markdown(page.format(predicted="7.05 ms", measured="6.18 ms"))
    assert one != comparable_markdown(page.format(predicted="7.15 ms", measured="5.59 ms"))
    assert one.endswith("| 1 | 2 |")
