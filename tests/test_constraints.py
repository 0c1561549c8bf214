"""Constraints as plugins: FLOPs, parameters and latency (a per-block table measured on this machine), several
limits at once, one-line errors, the run's files, and a third-party constraint found through its entry point."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import shared_run

from nasengine import registry
from nasengine.cli import cli
from nasengine.errors import NasEngineError
from nasengine.flops import cost_of
from nasengine.latency import LatencyTable, Timing, build_table, latency_table, read_table
from nasengine.protocol.limits import run_limits
from nasengine.rundir.history import read_history
from nasengine.rundir.records import read_json
from nasengine.settings import config as configuration
from nasengine.settings.config import SearchConfig
from nasengine.testing import check_constraint

FAST = Timing(warmup=1, rounds=2, number=1)


@pytest.fixture(scope="module")
def space():
    return registry.create("space", "shufflenet-small")


@pytest.fixture(scope="module")
def fast_table(space) -> LatencyTable:
    """A table at 32 px with the fewest timings: its numbers are rough, its shape is what tests read."""
    return build_table(space, 32, timing=FAST, overhead_networks=2)


def timeless(history: Path) -> list[dict]:
    """A history's records without their seconds (wall clock)."""
    return [
        {k: v for k, v in json.loads(line).items() if "seconds" not in k} for line in history.read_text().splitlines()
    ]


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


# --- the plugin kind ------------------------------------------------------------------------------
def test_built_in_constraints_are_registered_as_plugins_are():
    found = registry.plugins("constraint")
    assert {"flops", "params", "latency"} <= set(found)
    assert all(found[name].source.startswith("nasengine ") for name in ("flops", "params", "latency"))
    listed = CliRunner().invoke(cli, ["list"]).output
    assert "constraints" in listed and "latency" in listed


@pytest.mark.parametrize("name", ["flops", "params"])
def test_counted_constraints_pass_the_conformance_checks(name, space):
    check_constraint(registry.create("constraint", name), space)


def test_latency_passes_the_conformance_checks(space):
    check_constraint(registry.create("constraint", "latency", image_size=32), space)


def test_a_constraint_that_breaks_the_rules_is_named_in_one_line(space):
    from nasengine.interfaces import Constraint

    class Drifting(Constraint):
        name = "drifting"
        calls = 0

        def cost(self, space, arch):
            Drifting.calls += 1
            return float(Drifting.calls)

    class Negative(Constraint):
        name = "negative"

        def cost(self, space, arch):
            return -1.0

    with pytest.raises(NasEngineError) as excinfo:
        check_constraint(Drifting(), space)
    assert "constraint 'drifting': cost of" in one_line(excinfo) and "deterministic" in one_line(excinfo)
    with pytest.raises(NasEngineError) as excinfo:
        check_constraint(Negative(), space)
    assert "not a finite number >= 0" in one_line(excinfo)


# --- configuration ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "constraints, message",
    [
        ({"latncy": {"max": 5}}, "search.constraints.latncy: unknown constraint 'latncy'; known constraints: "),
        ({"latency": {}}, "search.constraints.latency has no max; set the limit with --set"),
        ({"latency": 5}, "search.constraints.latency must be a table with max = NUMBER"),
        ({"latency": {"max": -1}}, "search.constraints.latency.max must be a number >= 0, not -1"),
        ({"latency": {"max": 5, "min": 6}}, "max must be > 0 and at least min (min 6, max 5)"),
        ({"latency": {"max": 5, "bacth": 8}}, "constraint 'latency' has no option 'bacth'; its options: table, "),
        ({"latency": {"max": 5, "batch": 0}}, "constraint latency: batch must be an integer >= 1, not 0"),
        ({"flops": {"max": 5}}, "FLOPs are limited by search.flops_max / search.flops_min (--flops-max)"),
    ],
)
def test_bad_constraints_are_refused_in_one_line(constraints, message):
    with pytest.raises(NasEngineError) as excinfo:
        configuration.resolve("smoke", overrides={"search": {"constraints": constraints}})
    assert message in one_line(excinfo)


def test_options_of_a_constraint_go_beside_its_limit():
    with pytest.raises(NasEngineError) as excinfo:
        configuration.resolve("smoke", overrides={"options": {"constraint": {"latency": {"batch": 2}}}})
    assert "under search.constraints.NAME" in one_line(excinfo)


def test_constraints_are_kept_in_config_toml(tmp_path):
    config = configuration.resolve("smoke", overrides={"search": {"constraints": {"params": {"max": 2e6}}}})
    configuration.save(config, tmp_path / "config.toml")
    assert configuration.load(tmp_path / "config.toml").search.constraints == {"params": {"max": 2e6}}
    assert "[search.constraints.params]" in (tmp_path / "config.toml").read_text()


def test_latency_flags_set_the_constraint():
    from nasengine.cli import _overrides

    overrides = _overrides({"latency_max": 12.0, "latency_table": "t.json"})
    assert overrides["search"]["constraints"] == {"latency": {"max": 12.0, "table": "t.json"}}


# --- limits ------------------------------------------------------------------------------------------
def test_several_limits_at_once(space):
    baseline = space.named["shufflenetv2-20"]
    params = cost_of(space, baseline).params
    search = SearchConfig(flops_max=300e6, constraints={"params": {"max": params}})
    limits = run_limits(space, search, input_size=64)
    assert [limit.name for limit in limits] == ["flops", "params"]
    assert limits.costs(baseline) == {"flops": cost_of(space, baseline).flops, "params": params}
    assert limits.legal(baseline)
    heavier = (3,) * 4 + (0,) * 16  # more parameters than the baseline, and fewer than 300M FLOPs
    assert cost_of(space, heavier).flops <= 300e6 and not limits.legal(heavier)
    assert [limit.name for limit in limits.broken(limits.costs(heavier))] == ["params"]
    assert limits.text() == f"flops ≤ 300.0 M MACs and params ≤ {params / 1e6:.3f} M parameters"


def test_an_unreachable_limit_names_the_space_range(space):
    search = SearchConfig(flops_max=300e6, constraints={"params": {"max": 1000}})
    with pytest.raises(NasEngineError) as excinfo:
        run_limits(space, search, input_size=64)
    assert one_line(excinfo).startswith("no architecture of shufflenet-small fits params ≤ 0.001 M parameters: the ")
    assert "choose search.constraints.params.max/min inside that range" in one_line(excinfo)


# --- latency tables ----------------------------------------------------------------------------------
def test_a_latency_table_has_every_choice_at_every_position(space, fast_table):
    assert [len(row) for row in fast_table.ms] == list(space.choices)
    assert all(value > 0 for row in fast_table.ms for value in row) and fast_table.fixed_ms > 0
    arch = space.named["detnas-coco-fpn-300m"]
    expected = fast_table.fixed_ms + fast_table.overhead_ms + sum(row[c] for row, c in zip(fast_table.ms, arch))
    assert fast_table.latency(arch) == pytest.approx(expected)
    low, high = fast_table.latency_range()
    assert low <= fast_table.latency(arch) <= high
    info = fast_table.info
    assert info["space"] == "shufflenet-small" and info["image_size"] == 32 and info["batch"] == 1
    assert info["threads"] == torch.get_num_threads() and info["device"] == "cpu" and info["device_name"]
    assert info["torch"] == torch.__version__ and len(info["overhead_from"]) == 2
    assert LatencyTable.from_json(json.loads(json.dumps(fast_table.to_json()))) == fast_table


def test_a_latency_table_is_measured_once_then_cached(space, monkeypatch, tmp_path):
    from nasengine import latency

    monkeypatch.setenv("NASENGINE_CACHE", str(tmp_path))
    monkeypatch.setattr(latency, "_tables", {})
    built = []

    def fake_build(space, image_size, **kw):
        built.append(image_size)
        return build_table(space, image_size, batch=kw["batch"], device=kw["device"], timing=FAST, overhead_networks=1)

    monkeypatch.setattr(latency, "build_table", fake_build)
    first = latency_table(space, 32)
    monkeypatch.setattr(latency, "_tables", {})  # a new process: the disk cache answers
    assert latency_table(space, 32) == first and built == [32]
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        latency_table(space, 32)  # another thread count is another table
    finally:
        torch.set_num_threads(threads)
    assert built == [32, 32]


def test_latency_table_files_are_checked(space, fast_table, tmp_path):
    path = tmp_path / "table.json"
    with pytest.raises(NasEngineError) as excinfo:
        read_table(path, space)
    assert "does not exist; build one with: nasengine latency build --space shufflenet-small" in one_line(excinfo)
    path.write_text("{not json")
    with pytest.raises(NasEngineError, match="is not JSON"):
        read_table(path, space)
    path.write_text(json.dumps({"ms": []}))
    with pytest.raises(NasEngineError, match="is not a nasengine latency table"):
        read_table(path, space)
    path.write_text(json.dumps(fast_table.to_json()))
    assert read_table(path, space) == fast_table
    with pytest.raises(NasEngineError) as excinfo:
        read_table(path, registry.create("space", "shufflenet-large"))
    assert "was measured for space 'shufflenet-small'" in one_line(excinfo)


def test_the_run_keeps_the_table_it_searched_with(space, fast_table, tmp_path, monkeypatch):
    import nasengine.constraints.latency as module

    monkeypatch.setattr(module, "latency_table", lambda *a, **k: fast_table)
    first = registry.create("constraint", "latency", image_size=32)
    first.prepare(space, input_size=64, folder=tmp_path)
    assert (tmp_path / "latency_table.json").is_file()
    other = build_table(space, 32, timing=FAST, overhead_networks=1)  # what the cache would say now
    monkeypatch.setattr(module, "latency_table", lambda *a, **k: other)
    resumed = registry.create("constraint", "latency", image_size=32)
    resumed.prepare(space, input_size=64, folder=tmp_path)
    arch = space.named["detnas-coco-fpn-300m"]
    assert resumed.cost(space, arch) == first.cost(space, arch)


def test_a_table_of_another_size_is_refused(space, fast_table, tmp_path):
    path = tmp_path / "table.json"
    path.write_text(json.dumps(fast_table.to_json()))
    constraint = registry.create("constraint", "latency", table=str(path))
    with pytest.raises(NasEngineError) as excinfo:
        constraint.prepare(space, input_size=64)
    assert f"latency table {path} was measured at 32px, batch 1; this search asks for 64px" in one_line(excinfo)
    registry.create("constraint", "latency", table=str(path), image_size=32).prepare(space, input_size=64)


def test_latency_build_writes_a_table_file(tmp_path):
    out = tmp_path / "here" / "table.json"
    result = CliRunner().invoke(
        cli, ["latency", "build", "--space", "shufflenet-small", "--image-size", "32", "--threads", "1", "--out", out]
    )
    assert result.exit_code == 0, result.output
    table = read_table(out, registry.create("space", "shufflenet-small"))
    assert table.info["threads"] == 1 and table.info["image_size"] == 32
    assert f"--latency-table {out}" in " ".join(result.output.split())
    folder = CliRunner().invoke(
        cli, ["latency", "build", "--space", "shufflenet-small", "--image-size", "32", "--out", tmp_path]
    )
    assert folder.exit_code != 0 and "is a folder" in str(folder.exception or folder.output)


# --- a run under latency -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def latency_run(tmp_path_factory) -> Path:
    """A smoke run under FLOPs and a generous latency limit, shared by this module's tests."""
    return shared_run(
        tmp_path_factory,
        "latency-run",
        ["run", "--preset", "smoke", "--out", "{out}", "--quiet", "--latency-max", "40"],
    )


def test_a_run_under_latency_records_and_checks_it(latency_run):
    history = read_history(latency_run / "search" / "history.jsonl")
    assert all(set(record["costs"]) == {"flops", "latency"} for record in history)
    assert all(record["costs"]["latency"] <= 40 and record["costs"]["flops"] == record["flops"] for record in history)
    table = read_json(latency_run / "search" / "latency_table.json")
    assert table["threads"] == 1 and table["image_size"] == 64  # the demo's detection input, one thread
    best = read_json(latency_run / "retrain" / "best" / "test.json")
    assert best["costs"]["latency"] == next(r for r in history if r["arch"] == best["arch"])["costs"]["latency"]
    assert 0 < best["measured"]["latency"] and best["measured"]["flops"] == best["flops"]
    summary = read_json(latency_run / "report" / "summary.json")["constraints"]
    assert summary["limits"]["latency"]["max"] == 40 and summary["retrained"]["best"]["latency"]["within"]
    assert -1 <= summary["flops_rank_agreement"]["latency"] <= 1
    text = (latency_run / "report" / "summary.md").read_text()
    assert "## Constraints" in text and "latency_vs_score.png" in text and "FLOPs and latency rank" in text
    assert (latency_run / "report" / "latency_vs_score.png").is_file()


def test_the_report_costs_another_runs_winner_as_this_run_does(latency_run, smoke_run, tmp_path):
    run = Path(shutil.copytree(latency_run, tmp_path / "run"))
    result = CliRunner().invoke(cli, ["report", str(run), "--compare", str(smoke_run)])
    assert result.exit_code == 0, result.output
    compare = read_json(run / "report" / "summary.json")["compare"]
    other = read_json(smoke_run / "search" / "best.json")
    assert compare["costs"]["flops"] == other["flops"] and compare["costs"]["latency"] > 0
    text = (run / "report" / "summary.md").read_text()
    assert f"The winner beside `{smoke_run}`'s, both costed as this run's search costs them" in text


def test_show_and_export_say_the_limits(latency_run, tmp_path):
    shown = CliRunner().invoke(cli, ["show", str(latency_run)])
    assert shown.exit_code == 0, shown.output
    assert "limits: flops ≤ 300.0 M MACs (image_size 224); latency ≤ 40.00 ms" in " ".join(shown.output.split())
    exported = CliRunner().invoke(
        cli, ["export", str(latency_run), "--format", "safetensors", "--out", str(tmp_path / "export")]
    )
    assert exported.exit_code == 0, exported.output
    info = read_json(tmp_path / "export" / "backbone.json")
    assert info["limits"]["latency"] == {"min": 0.0, "max": 40.0, "options": {}}
    assert info["costs"]["latency"] > 0 and info["measured"]["latency"] > 0


def test_a_search_under_latency_resumes_to_the_same_history(latency_run, tmp_path):
    run = Path(shutil.copytree(latency_run, tmp_path / "run"))
    history = run / "search" / "history.jsonl"
    lines = history.read_text().splitlines(keepends=True)
    for name in ("done.json", "best.json"):
        (run / "search" / name).unlink()
    history.write_text("".join(lines[:3]))
    result = CliRunner().invoke(cli, ["search", str(run), "--quiet"])
    assert result.exit_code == 0, result.output

    assert timeless(history) == timeless(latency_run / "search" / "history.jsonl")


def test_an_unreachable_latency_limit_is_refused_before_the_run(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--preset", "smoke", "--out", str(out), "--latency-max", "0.01"])
    message = " ".join(str(result.exception or result.output).split())
    assert result.exit_code != 0
    assert "no architecture of shufflenet-small fits latency ≤ 0.01 ms: the space spans" in message
    assert not out.exists()


# --- a third-party constraint ------------------------------------------------------------------------
ACTIVATIONS = '''
"""A third-party constraint: the values the backbone's blocks write (their outputs' elements), at 224 px."""

import torch

from nasengine.interfaces import Constraint


class ActivationsConstraint(Constraint):
    name = "activations"
    unit = "values"
    description = "elements of every block's output at 224 px (memory traffic)"

    def prepare(self, space, *, input_size, folder=None):
        self.fixed, self.table = 0, {}
        with torch.no_grad():
            for position, choice, module, shape in space.cost_parts(224):
                values = module.eval()(torch.zeros(shape)).numel()
                if position is None:
                    self.fixed += values
                else:
                    self.table[position, choice] = values

    def cost(self, space, arch):
        return float(self.fixed + sum(self.table[p, c] for p, c in enumerate(arch)))

    def cost_range(self, space):
        rows = [[self.table[p, c] for c in range(n)] for p, n in enumerate(space.choices)]
        return float(self.fixed + sum(map(min, rows))), float(self.fixed + sum(map(max, rows)))
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """A folder holding a package ``nasengine_activations`` and its distribution's metadata (the entry point), as
    ``pip install`` would leave them: on ``PYTHONPATH`` it is an installed third-party plugin."""
    folder = tmp_path_factory.mktemp("site")
    (folder / "nasengine_activations.py").write_text(textwrap.dedent(ACTIVATIONS))
    info = folder / "nasengine_activations-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nasengine-activations\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[nasengine.constraints]\nactivations = nasengine_activations:ActivationsConstraint\n"
    )
    return folder


def nasengine(plugin_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(plugin_path), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "nasengine", *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )


def test_a_third_party_constraint_passes_the_conformance_checks(plugin_path):
    listed = nasengine(plugin_path, "list")
    assert "activations" in listed.stdout and "nasengine-activations 0.1" in listed.stdout, listed.stderr
    checked = nasengine(plugin_path, "check", "--space", "shufflenet-small", "--constraint", "activations")
    assert checked.returncode == 0, checked.stderr
    assert "constraint activations on shufflenet-small" in checked.stdout


@pytest.mark.slow
def test_a_third_party_constraint_constrains_a_smoke_run(plugin_path, tmp_path, space):
    sys.path.insert(0, str(plugin_path))
    try:
        from nasengine_activations import ActivationsConstraint
    finally:
        sys.path.remove(str(plugin_path))
    constraint = ActivationsConstraint()
    constraint.prepare(space, input_size=64)
    low, high = constraint.cost_range(space)
    limit = low + 0.3 * (high - low)  # a third of the way: most of the space is refused
    out = tmp_path / "run"
    result = nasengine(
        plugin_path,
        "run",
        "--preset",
        "smoke",
        "--out",
        out,
        "--quiet",
        "--set",
        f"search.constraints.activations.max={limit}",
    )
    assert result.returncode == 0, result.stderr
    history = read_history(out / "search" / "history.jsonl")
    assert history and all(record["costs"]["activations"] <= limit for record in history)
    assert read_json(out / "retrain" / "best" / "test.json")["costs"]["activations"] <= limit
    assert "activations ≤" in (out / "report" / "summary.md").read_text()


def test_a_damaged_kept_table_is_refused_and_its_hint_works(latency_run, tmp_path):
    run = Path(shutil.copytree(latency_run, tmp_path / "run"))
    table = run / "search" / "latency_table.json"
    table.write_text(table.read_text().replace('"ms"', '"mz"'))
    refused = CliRunner().invoke(cli, ["search", str(run), "--quiet"])
    message = " ".join(str(refused.exception or refused.output).split())
    assert refused.exit_code != 0 and "latency_table.json" in message
    assert f"nasengine search {run} --redo" in message
    redone = CliRunner().invoke(cli, ["search", str(run), "--redo", "--quiet"])
    assert redone.exit_code == 0, redone.output
    assert read_json(table)["ms"] == read_json(latency_run / "search" / "latency_table.json")["ms"]  # the cached one
    assert timeless(run / "search" / "history.jsonl") == timeless(latency_run / "search" / "history.jsonl")
