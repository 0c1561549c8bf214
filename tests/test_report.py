"""The report and the paper's figures, drawn from small synthetic run directories (no training)."""

import json
import math
import random
import statistics

import pytest
from click.testing import CliRunner
from PIL import Image

from nasengine import registry
from nasengine.cli import cli
from nasengine.errors import NasEngineError
from nasengine.report.arch_figure import block_boxes, space_layout
from nasengine.report.build import report_run, training_logs
from nasengine.report.figures import generation_ends, pareto_front
from nasengine.rundir.training_log import read_training_log
from nasengine.settings import config as configuration
from nasengine.studies.random_baseline import check_compare, write_baseline

POSITIONS = 20
POPULATION, GENERATIONS = 4, 3
BASELINE = "shufflenetv2-20"
FIGURES = ("search_curve", "search_progress", "flops_vs_score", "architecture", "training_curves")
SECONDS = {
    "pretrain": 12.5,
    "pretrain/distill": 3.5,
    "finetune": 7.25,
    "search": 4.5,
    "search-random": 3.75,
    "retrain/best/pretrain": 2.0,
    "retrain/best/finetune": 1.5,
    f"retrain/{BASELINE}/pretrain": 0.0,
    f"retrain/{BASELINE}/finetune": 1.25,
}


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def history(rng, seen):
    """POPULATION x GENERATIONS records of distinct architectures, as nasengine.protocol.search writes them; FLOPs from
    a few values so that candidates tie on FLOPs, and one exact tie on FLOPs and score."""
    records = []
    for generation in range(GENERATIONS):
        for _ in range(POPULATION):
            arch = [rng.randrange(4) for _ in range(POSITIONS)]
            while tuple(arch) in seen:
                arch = [rng.randrange(4) for _ in range(POSITIONS)]
            seen.add(tuple(arch))
            score = round(rng.uniform(0.05, 0.1), 6)
            records.append(
                {
                    "arch": arch,
                    "flops": rng.choice((255_000_000, 270_500_000, 284_000_000, 299_000_000)),
                    "params": 1_500_000 + rng.randrange(100_000),
                    "score": score,
                    "metrics": {"AP": score, "AP50": 2 * score, "score": score},
                    "calib_seconds": 0.1,
                    "score_seconds": 0.1,
                    "seconds": 0.2,
                    "generation": generation,
                }
            )
    records[-1].update(flops=records[0]["flops"], score=records[0]["score"])
    records[-1]["metrics"].update(AP=records[0]["score"], score=records[0]["score"])
    return records


def retrained(arch, rng):
    ap = round(rng.uniform(0.1, 0.2), 6)
    return {
        "arch": arch,
        "arch_text": ",".join(map(str, arch)),
        "flops": 250_000_000 + rng.randrange(50_000_000),
        "params": 1_500_000 + rng.randrange(100_000),
        "test": {"AP": ap, "AP50": round(2 * ap, 6), "score": ap},
    }


def log_lines(iterations, key="loss", torn=False):
    lines = [json.dumps({"iteration": i, key: 3.0 / i, "lr": 0.01 * (1 - i / iterations), "images_per_s": 50.0})
             for i in range(1, iterations + 1)]  # fmt: skip
    return "\n".join(lines) + ("\n" + lines[-1][:15] if torn else "\n")


def make_run(root, name, seed=0, on="detection"):
    """A finished run directory: config, search and random search histories, done.json files, training
    logs and retrained networks' test.json."""
    rng, seen = random.Random(seed), set()
    run = root / name
    config = configuration.resolve("smoke", overrides={"search": {"on": on}, "seed": seed})
    config.search.flops_max = 300e6
    configuration.save(config, run / "config.toml")
    for folder in ("search", "search-random"):
        records = history(rng, seen)
        write(run / folder / "history.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    records = [json.loads(line) for line in (run / "search" / "history.jsonl").read_text().splitlines()]
    best = max(records, key=lambda r: r["score"])
    write(run / "search" / "best.json", {**best, "arch_text": ",".join(map(str, best["arch"])), "candidates": 12})
    for folder, seconds in SECONDS.items():
        if folder == "pretrain/distill":
            continue  # its time is in pretrain/done.json, as the engine writes it
        info: dict = {"candidates": 12} if folder.startswith("search") else {"iterations": 40}
        if folder == "pretrain":
            info["distill"] = {"iterations": 10, "seconds": SECONDS["pretrain/distill"]}
        write(run / folder / "done.json", {**info, "seconds": seconds})
    write(run / "retrain" / "done.json", {"entries": ["best", BASELINE]})
    write(run / "pretrain" / "log.jsonl", log_lines(40, torn=True))
    write(run / "pretrain" / "distill" / "log.jsonl", log_lines(10, key="distill_loss"))
    write(run / "finetune" / "log.jsonl", log_lines(40))
    for entry, arch in (("best", best["arch"]), (BASELINE, [0] * POSITIONS)):
        write(run / "retrain" / entry / "test.json", retrained(arch, rng))
        for phase in ("pretrain", "finetune"):
            write(run / "retrain" / entry / phase / "log.jsonl", log_lines(40))
    return run


def read_records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def dominated(record, records):
    return any(
        other["flops"] <= record["flops"]
        and other["score"] >= record["score"]
        and (other["flops"] < record["flops"] or other["score"] > record["score"])
        for other in records
    )


def md_table(text, heading):
    """The rows (lists of cells) of the first table after ``heading`` in a Markdown text."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def row(rows, first):
    return next(r for r in rows if r[0] == first)


def assert_png(path):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 200
        assert sum(count > 0 for count in image.convert("L").histogram()) > 20, f"{path.name} looks empty"


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("runs"), "detection-run")
    path = report_run(run)
    return run, path.read_text()


# --- the figures ---------------------------------------------------------------------------------
def test_every_figure_is_a_valid_png_in_the_report_folder(reported):
    run, text = reported
    for name in FIGURES:
        assert_png(run / "report" / f"{name}.png")
    assert not (run / "report" / "random_models.png").exists()  # no --random-baseline given
    assert json.loads((run / "report" / "summary.json").read_text())["candidates_evaluated"] == 12
    for name in FIGURES:
        assert f"]({name}.png)" in text


def test_training_logs_cover_every_phase_in_protocol_order_and_skip_a_torn_line(reported):
    run, _ = reported
    assert list(training_logs(run)) == [
        "pretrain",
        "pretrain/distill",
        "finetune",
        "retrain/best/pretrain",
        "retrain/best/finetune",
        f"retrain/{BASELINE}/pretrain",
        f"retrain/{BASELINE}/finetune",
    ]
    assert [r["iteration"] for r in read_training_log(run / "pretrain" / "log.jsonl")] == list(range(1, 41))


def test_generation_ends_count_the_candidates_at_each_generations_end():
    records = [{"generation": g} for g in (0, 0, 1, 1, 1, 2)]
    assert generation_ends(records) == [2, 5, 6]
    assert generation_ends([]) == []


def test_pareto_front_keeps_exact_ties_and_never_a_nan_score():
    records = [
        {"flops": 100, "score": 0.5},
        {"flops": 100, "score": 0.4},  # same FLOPs, lower score: beaten
        {"flops": 200, "score": 0.7},
        {"flops": 200, "score": 0.7},  # an exact tie: neither beats the other
        {"flops": 150, "score": 0.5},  # more FLOPs for the same score: beaten
        {"flops": 50, "score": math.nan},
        {"flops": 300, "score": 0.6},  # beaten by the 200-FLOPs ones
    ]
    assert pareto_front(records) == [0, 2, 3]


def test_architecture_layout_follows_the_spaces_choices_and_stages_or_falls_back():
    space = registry.create("space", "shufflenet-small")
    arch = [0, 1, 2, 3] * 5
    layout = space_layout(space, arch)
    assert layout.names == ("3×3", "5×5", "7×7", "Xception") and layout.stages == (4, 4, 8, 4)
    boxes = block_boxes(arch, layout)
    assert [b.height for b in boxes[:4]] == sorted({b.height for b in boxes})  # each choice its own size
    assert [b.stage for b in boxes] == [0] * 4 + [1] * 4 + [2] * 8 + [3] * 4
    gaps = [b.x - a.x for a, b in zip(boxes, boxes[1:])]
    assert gaps[3] > gaps[2] == gaps[0] and gaps[7] > gaps[6]  # stages set apart

    class Bare:  # a third-party space with no names nor stages
        choices = (2, 3, 2)

    assert space_layout(Bare(), [1, 2, 0]).names == ("choice 0", "choice 1", "choice 2")
    assert space_layout(Bare(), [1, 2, 0]).stages == (3,)
    assert space_layout(None, [0, 4]).names[-1] == "choice 4"
    Bare.repeats, Bare.choice_names = (2, 2), ("a",)  # do not fit the 3 positions / 3 choices
    assert space_layout(Bare(), [1, 2, 0]) == space_layout(None, [1, 2, 0])


# --- summary.md ----------------------------------------------------------------------------------
def test_summary_md_has_the_runs_results_beside_the_baseline(reported):
    run, text = reported
    best = json.loads((run / "search" / "best.json").read_text())
    rows = md_table(text, "## The found architecture")
    for entry in ("best", BASELINE):
        result = json.loads((run / "retrain" / entry / "test.json").read_text())
        cells = row(rows, entry)
        assert cells[1] == "`" + "".join(map(str, result["arch"])) + "`"
        assert cells[2] == f"{result['flops'] / 1e6:.1f}" and cells[3] == f"{result['params'] / 1e6:.2f}"
        assert cells[5:] == [f"{result['test'][k]:.4f}" for k in ("score", "AP", "AP50")]
    assert row(rows, "best")[4] == f"{best['score']:.4f}" and row(rows, BASELINE)[4] == ""
    assert f"best search-split score {best['score']:.4f}." in text


def test_summary_md_lists_exactly_the_pareto_front(reported):
    run, text = reported
    records = read_records(run / "search" / "history.jsonl")
    front = [r for r in records if not dominated(r, records)]
    rows = md_table(text, "### Pareto front")
    assert sorted(r[0].strip("`") for r in rows) == sorted("".join(map(str, r["arch"])) for r in front)
    assert len(front) >= 2 and len(rows) == len(front)
    for cells in rows:
        record = next(r for r in front if "".join(map(str, r["arch"])) == cells[0].strip("`"))
        assert cells[1:] == [f"{record['flops'] / 1e6:.1f}", f"{record['score']:.4f}", str(record["generation"] + 1)]


def test_summary_md_has_phase_times_search_vs_random_and_the_configuration(reported):
    run, text = reported
    rows = md_table(text, "## Training and phase times")
    assert {r[0]: r[2] for r in rows[:-1]} == {name: f"{seconds:.1f}" for name, seconds in SECONDS.items()}
    assert row(rows, "total")[2] == f"{sum(SECONDS.values()):.1f}"
    assert row(rows, "pretrain/distill")[1] == "10 iterations" and row(rows, "search")[1] == "12 candidates"

    top2 = {
        folder: statistics.fmean(sorted(r["score"] for r in read_records(run / folder / "history.jsonl"))[-2:])
        for folder in ("search", "search-random")
    }  # the smoke preset's top_k is 2
    rows = md_table(text, "### Against random search")
    assert (
        row(rows, "evolution")[2] == f"{top2['search']:.4f}"
        and row(rows, "random")[2] == f"{top2['search-random']:.4f}"
    )

    config = configuration.load(run / "config.toml")
    settings = dict((r[0], r[1]) for r in md_table(text, "## Configuration"))
    assert settings["pretrain_schedule.iterations"] == str(config.pretrain_schedule.iterations)
    assert settings["finetune_schedule.lr"] == str(config.finetune_schedule.lr)
    assert settings["search.flops_max"] == "300000000.0" and settings["space"] == config.space
    assert settings["search.strategy_options.population"] == str(config.search.strategy_options["population"])


# --- --compare and --random-baseline --------------------------------------------------------------
def test_compare_draws_both_architectures_and_names_the_other_search(tmp_path, reported):
    run, _ = reported
    other = make_run(tmp_path, "classification-run", seed=1, on="classification")
    copy = make_run(tmp_path, "detection-run")
    text = report_run(copy, compare=other).read_text()
    other_best = json.loads((other / "search" / "best.json").read_text())
    cells = md_table(text, "Compared with")[0]
    assert cells[1:4] == [
        "`" + "".join(map(str, other_best["arch"])) + "`",
        f"{other_best['flops'] / 1e6:.1f}",
        f"{other_best['score']:.4f}",
    ]
    assert "(searched on classification)" in text
    single, double = (Image.open(r / "report" / "architecture.png").height for r in (run, copy))
    assert double > single + 100  # a second row of blocks


def test_random_models_are_plotted_by_the_baseline_and_by_the_report(tmp_path, reported):
    run, _ = reported
    rng = random.Random(5)
    results = [retrained([rng.randrange(4) for _ in range(POSITIONS)], rng) for _ in range(6)]
    folder = tmp_path / "baseline"
    summary = write_baseline(results, folder, run, "random baseline")
    assert_png(folder / "random_models.png")
    assert summary["searched"] == json.loads((run / "retrain" / "best" / "test.json").read_text())

    text = report_run(run, random_baseline=folder).read_text()
    assert_png(run / "report" / "random_models.png")
    assert "](random_models.png)" in text
    scores = [r["test"]["score"] for r in results]
    rows = md_table(text, "## Random models")
    assert row(rows, "random (mean ± std)")[1] == f"{statistics.fmean(scores):.4f} ± {statistics.stdev(scores):.4f}"
    searched = json.loads((run / "retrain" / "best" / "test.json").read_text())["test"]["score"]
    assert row(rows, "best")[2] == f"{sum(s < searched for s in scores)} of 6"


def test_bad_baseline_and_compare_folders_are_one_line_errors(tmp_path, reported):
    run, _ = reported
    (tmp_path / "empty").mkdir()
    with pytest.raises(NasEngineError, match="has no random_baseline.json") as error:
        report_run(run, random_baseline=tmp_path / "empty")
    assert "\n" not in str(error.value)
    with pytest.raises(NasEngineError, match="--compare .* is not a run directory"):
        report_run(run, compare=tmp_path / "empty")
    with pytest.raises(NasEngineError, match="no tested searched network"):
        check_compare(tmp_path / "empty")
    other = tmp_path / "other-task"
    write(other / "random_baseline.json", {"count": 0, "mean": 0, "std": 0, "results": []})
    configuration.save(configuration.resolve("smoke", overrides={"task": "voc-fpn"}), other / "config.toml")
    with pytest.raises(NasEngineError, match="same space and task"):
        report_run(run, random_baseline=other)


# --- the command ---------------------------------------------------------------------------------
def test_report_command_writes_the_report_and_says_where(tmp_path):
    run = make_run(tmp_path, "run")
    result = CliRunner().invoke(cli, ["report", str(run)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"report: {run / 'report' / 'summary.md'} " in result.output
    assert (run / "report" / "summary.md").is_file() and (run / "report" / "architecture.png").is_file()


def test_report_command_on_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code != 0 and isinstance(result.exception, NasEngineError)
    assert "is not a run directory (no config.toml)" in str(result.exception)
    assert "\n" not in str(result.exception)
    assert not (tmp_path / "report").exists()


def test_a_figure_is_replaced_whole_or_not_at_all(tmp_path):
    from nasengine.report.drawing import pyplot, save_figure

    plt = pyplot()
    path = save_figure(plt.subplots()[0], tmp_path / "figure.png")
    before = path.read_bytes()
    fig, _ = plt.subplots()

    def killed_mid_write(handle, **_):
        handle.write(b"\x89PNG half a figure")
        raise KeyboardInterrupt

    fig.savefig = killed_mid_write
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["figure.png"]
