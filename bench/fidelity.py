"""Does the search mean anything? One table of fidelity measures over a few seeds of a preset.

For each seed (``--seeds 0,1,2``) the preset's whole protocol runs into ``RUNS/seed<S>`` (``nasengine run
--preset demo --seed S --out RUNS/seedS``, through the venv's ``nasengine`` command in a subprocess; a
complete run directory is only read). On each check seed's run (``--check-seeds``, default 0; ``all`` for
every seed) it also runs
``nasengine rank-check RUN -n N --schedule-scale X`` and ``nasengine search RUN --strategy random
--budget-like evolution`` (the run's own strategy), each unless its result is there already. Then it
measures, per seed where it applies:

- **wall time** — the ``seconds`` of every ``done.json`` of the run's phases: pretrain (with a
  distillation recipe's teacher and distillation), finetune, search, and the retrained networks'
  ``retrain/*/pretrain`` and ``retrain/*/finetune``; the test passes and process start-up are not in it.
- **pre-training loss ratio** — mean loss of the supernet's last 50 pre-training iterations
  (``pretrain/log.jsonl``) over the same for the standalone baseline (``retrain/<baseline>/pretrain``).
  A record's ``ce`` (the sampled path's cross-entropy, written by alternative supernet recipes) is used
  when present, else its ``loss``, for both logs. Aim: <= 1.25.
- **distinct non-zero scores** — distinct non-zero values among the search's candidates' scores, over
  the number of candidates (a tie counts once: it is the number of candidates the search can tell
  apart). Aim: >= 90%.
- **score spread** — standard deviation (sample) and range of all candidates' search scores.
- **score noise** — the search's best candidate rescored in this process on the trained supernet (built and
  loaded as ``Run.search`` does, scored by ``evaluate_candidate``) with ``--noise-draws`` (default 8: the
  standard deviation of 3 draws is only known within a factor of about 2) other calibration subsets: each is
  ``calib_size`` images drawn at random *with replacement* (numpy seed ``[draw_seed, 1, 1000 + d]``,
  ``--draw-seed`` default 0, recorded in the numbers) from the run's ``train`` split — the pool the run's own
  ``calib`` split comes from, disjoint from the ``search`` split the score is measured on. With replacement, so
  that a subset varies like a fresh sample of that size however much of the pool it takes (drawn without
  replacement, 1024 of 1200 images would share 85% with each other and hide most of the noise). The noise is the
  standard deviation (sample) of those scores; the cell gives it as a multiple of the spread. Why subsets and
  not recalibration seeds: ``recalibrate_bn``'s seed only seeds the detector's anchor and RoI sampling, and
  every BatchNorm layer sits in the backbone, before any sampling (the box head uses GroupNorm), with no
  augmentation on the calib split — so the seed changes no statistic (checked: every BN running mean and
  variance identical under seeds 0 and 1). The "best" row shows the rescoring: the search score, then the best
  rescored with the run's own calib split and seed (must equal the search score: the rescoring is the search's),
  with seed+1, and the mean over the subsets (below the search score when the search picked its best partly for
  luck). Aim: noise <= 0.25 x spread.
- **Kendall tau / Spearman rho** — from a check seed's ``report/rank_check.json``. Aim: tau >= 0.3.
- **the baseline in the rank check** — where the baseline (the retrained one's architecture, when the rank
  check trained it as one of its networks) ranks among the rank check's networks by standalone test score
  and by supernet score (1 = best; ties share the better rank). The winner can beat the baseline only if the
  search finds a network that trains better alone: when the baseline ranks first alone, no network of the
  check does, and the supernet's rank says whether it would have picked the baseline.
- **evolution vs random** — final mean of the top-k search scores of each search, and the candidates
  each needed to reach the other's final (``nasengine.studies.search_compare.search_comparison``).
  Aim: evolution's top-k mean >= random's.
- **winner vs baseline** — test score (AP) of the retrained winner and of the baseline. Aim: winner >=
  baseline in 2 of every 3 seeds.

A measure whose inputs are missing reads ``n/a`` with a numbered reason under the table; ``—`` means
not measured for that seed (the rank check and random search run on the check seeds only). "met"
counts the seeds meeting the aim. The numbers go to ``OUT/fidelity.json`` (``--out``, by default the ``--runs``
folder), the commands' output to ``OUT/logs/``; the noise measure is cached in ``OUT/noise/<run>.json``, keyed by
the run directory's resolved path, the architecture, the draws, the draw seed and the supernet file's size and time.
Run directories are only read (``nasengine`` commands write into them).

Usage (from the repository root)::

    .venv/bin/python -m bench.fidelity                        # demo preset, seeds 0,1,2, into runs/fidelity
    .venv/bin/python -m bench.fidelity --from-existing        # only read what is there; run nothing
    .venv/bin/python -m bench.fidelity --check-seeds all      # rank check and random search on every seed
    .venv/bin/python -m bench.fidelity --runs /tmp/fid --seeds 0,1 --preset smoke --rank-n 3 --rank-scale 0.5

Time on 2 CPU cores (demo preset): about 12-15 minutes per seed's run (so 40-45 for three), random search
about 2.5 minutes, the rank check about 3.5 minutes per candidate at ``--rank-scale 1`` (about 30 for
8), the noise measure about 30 seconds per seed: about 75 minutes in all, less than a minute once
everything is done and cached. The smoke preset takes about 1.5 minutes per seed.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench import common
from bench.common import output_folder, run_key
from nasengine.errors import NasEngineError
from nasengine.rundir.history import read_history
from nasengine.rundir.layout import DONE, LOG, PHASES, SUMMARY, RunLayout
from nasengine.rundir.records import read_json, strict_json, write_json
from nasengine.rundir.training_log import read_training_log
from nasengine.settings import config as configuration

LAST_ITERATIONS = 50  # pre-training loss: the mean over this many final iterations
LOSS_RATIO_AIM = 1.25
DISTINCT_AIM = 0.9
NOISE_RATIO_AIM = 0.25
TAU_AIM = 0.3
WINNER_SHARE_AIM = 2 / 3
DRAW_SALT = 1000  # calib subset d is drawn with numpy seed [draw_seed, 1, DRAW_SALT + d]
COMPARED = "random"

AIMS = {
    "wall_time": "",
    "loss_ratio": f"≤ {LOSS_RATIO_AIM:g}",
    "distinct": f"≥ {DISTINCT_AIM:.0%}",
    "spread": "",
    "noise": f"≤ {NOISE_RATIO_AIM:g} × spread",
    "rescore": "rerun = search",
    "rank": f"τ ≥ {TAU_AIM:g}",
    "baseline_rank": "",
    "ea_vs_random": "EA ≥ random",
    "reach": "",
    "winner": "≥ in 2 of 3 seeds",
}
LABELS = {  # the row labels; the module docstring says what each measures
    "wall_time": "run wall time",
    "loss_ratio": "pretrain loss: supernet / baseline",
    "distinct": "distinct non-zero scores",
    "spread": "score spread: std (min to max)",
    "noise": "score noise: std over {draws} calib subsets",
    "rescore": "best: search → rerun, seed+1, subset mean",
    "rank": "rank check: Kendall τ (p), Spearman ρ",
    "baseline_rank": "rank check: baseline's rank alone, supernet",
    "ea_vs_random": "evolution vs random: top-k mean",
    "reach": "to reach the other's final: EA, random",
    "winner": "test score: winner / baseline",
}


class Missing(Exception):
    """An input of a measure is absent or unusable; its cell reads n/a with this message."""


@dataclass
class Cell:
    """One measure of one seed: what the table shows, the numbers, and whether it meets its aim."""

    text: str
    value: dict[str, Any] = field(default_factory=dict)
    ok: bool | None = None
    reason: str | None = None  # why the measure is n/a


NOT_MEASURED = Cell("—", reason=None)


# --- reading run directories ----------------------------------------------------------------------
def history(run_dir: Path) -> list[dict[str, Any]]:
    """The search's candidates in evaluation order, one per architecture (the last record wins)."""
    path = RunLayout(run_dir).history()
    if not path.exists():
        raise Missing(f"no {path}")
    records = read_history(path)
    if not records:
        raise Missing(f"{path} has no records")
    return records


def run_complete(run_dir: Path) -> bool:
    layout = RunLayout(run_dir)
    return layout.done("retrain").exists() and (layout.report / SUMMARY).exists()


def baseline_name(run_dir: Path) -> str:
    """The retrained network that is not ``best`` (the space's ``baseline_name`` when there are several)."""
    retrain = RunLayout(run_dir).retrain
    if not retrain.is_dir():
        raise Missing(f"no {retrain} (the run has not retrained yet)")
    others = sorted(p.name for p in retrain.iterdir() if p.is_dir() and p.name != "best")
    if not others:
        raise Missing(f"{retrain} has no baseline network (retrain_baseline off, or retraining unfinished)")
    if len(others) > 1 and space_baseline_name(run_dir) in others:
        return str(space_baseline_name(run_dir))
    return others[0]


def space_baseline_name(run_dir: Path) -> str | None:
    from nasengine import registry

    config = configuration.load(RunLayout(run_dir).config)
    return registry.create("space", config.space, **config.space_options).baseline_name


# --- measures -------------------------------------------------------------------------------------
def measure(function: Callable[..., Cell], *args: Any) -> Cell:
    """``function(*args)``, or an n/a cell saying why it could not be measured; never raises."""
    try:
        return function(*args)
    except (Missing, NasEngineError) as exc:  # an absent or unreadable input: its own one-line message
        return Cell("n/a", reason=str(exc))
    except Exception as exc:  # a measure is a report, not a check: show the failure, carry on
        lines = [line.strip() for line in str(exc).strip().splitlines()]
        text = " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else "")
        return Cell("n/a", reason=f"{type(exc).__name__}: {text[:300]}".rstrip(": "))


def wall_time(run_dir: Path) -> Cell:
    layout = RunLayout(run_dir)
    if not layout.done("retrain").exists():
        raise Missing(f"{run_dir} is unfinished (no retrain/{DONE})")
    parts = [done for phase in PHASES for done in sorted(layout.folder(phase).glob(f"**/{DONE}"))]
    seconds = {str(p.parent.relative_to(run_dir)): done_seconds(read_json(p)) for p in parts}
    seconds = {part: value for part, value in seconds.items() if value}
    total = sum(seconds.values())
    return Cell(f"{total / 60:.1f} min", {"seconds": round(total, 1), "parts": seconds})


def done_seconds(done: dict[str, Any]) -> float:
    """A ``done.json``'s ``seconds`` plus those of its sections (the distillation part of a pre-training)."""
    sections = [value for value in done.values() if isinstance(value, dict)]
    return sum(float(entry.get("seconds") or 0.0) for entry in [done, *sections])


def final_pretrain_loss(log: Path) -> tuple[float, int, str]:
    """Mean of ``ce`` (else ``loss``) over the last ``LAST_ITERATIONS`` iterations; iterations used; key."""
    if not log.exists():
        raise Missing(f"no {log}")
    records = {r["iteration"]: r for r in read_training_log(log)}
    if not records:
        raise Missing(f"{log} has no iteration records")
    last = max(records)
    window = [r for i, r in records.items() if i > last - LAST_ITERATIONS]
    keys = {"ce" if "ce" in r else "loss" for r in window}
    values = [float(r["ce"] if "ce" in r else r["loss"]) for r in window]
    return statistics.fmean(values), len(values), "/".join(sorted(keys))


def loss_ratio(run_dir: Path) -> Cell:
    layout = RunLayout(run_dir)
    supernet_log = layout.log("pretrain")
    if not supernet_log.exists() and layout.done("finetune").exists():
        raise Missing(f"{run_dir} has no supernet pre-training (DetNAS-scratch?)")
    supernet, supernet_n, supernet_key = final_pretrain_loss(supernet_log)
    base = baseline_name(run_dir)
    baseline, baseline_n, baseline_key = final_pretrain_loss(layout.retrain_phase(base, "pretrain") / LOG)
    ratio = supernet / baseline if baseline > 0 else math.nan
    value = {
        "ratio": ratio,
        "supernet": supernet,
        "baseline": baseline,
        "supernet_iterations": supernet_n,
        "baseline_iterations": baseline_n,
        "supernet_key": supernet_key,
        "baseline_key": baseline_key,
        "baseline_name": base,
    }
    key = "" if supernet_key == baseline_key == "loss" else f" [{supernet_key}/{baseline_key}]"
    return Cell(
        f"{ratio:.2f} ({supernet:.3f} / {baseline:.3f}){key}",
        value,
        ok=None if math.isnan(ratio) else ratio <= LOSS_RATIO_AIM,
    )


def finite_scores(run_dir: Path) -> list[float]:
    scores = [float(r["score"]) for r in history(run_dir)]
    return [s for s in scores if math.isfinite(s)]


def distinct_nonzero(run_dir: Path) -> Cell:
    records = history(run_dir)
    scores = [float(r["score"]) for r in records]
    distinct = {s for s in scores if math.isfinite(s) and s != 0.0}
    zeros = sum(s == 0.0 for s in scores)
    share = len(distinct) / len(scores)
    value = {"share": share, "distinct_nonzero": len(distinct), "candidates": len(scores), "zeros": zeros}
    return Cell(f"{len(distinct)}/{len(scores)} ({share:.0%}); {zeros} zero", value, ok=share >= DISTINCT_AIM)


def spread(run_dir: Path) -> Cell:
    scores = finite_scores(run_dir)
    if len(scores) < 2:
        raise Missing(f"{RunLayout(run_dir).folder('search')} has {len(scores)} finite score(s); a spread needs 2")
    std = statistics.stdev(scores)
    value = {"std": std, "min": min(scores), "max": max(scores), "range": max(scores) - min(scores), "n": len(scores)}
    return Cell(f"{std:.3g} ({min(scores):.3g} to {max(scores):.3g})", value)


def noise(run_dir: Path, rescored: dict[str, Any]) -> Cell:
    scores = rescored["subset_scores"]
    std = statistics.stdev(scores) if len(scores) > 1 else math.nan
    value = {"std": std, "scores": scores, "ratio": math.nan}
    try:
        spread_std = statistics.stdev(finite_scores(run_dir))
    except (Missing, statistics.StatisticsError):
        spread_std = math.nan
    if math.isnan(std):
        raise Missing(f"only {len(scores)} calib subset score(s): the noise needs 2")
    if not spread_std > 0:
        return Cell(f"{std:.3g}; spread 0: no ratio", value)
    value["ratio"] = std / spread_std
    return Cell(f"{std:.3g} = {value['ratio']:.2f} × spread", value, ok=value["ratio"] <= NOISE_RATIO_AIM)


def rescore(rescored: dict[str, Any]) -> Cell:
    search, rerun, other = rescored["search_score"], rescored["rerun_score"], rescored["other_seed_score"]
    mean = statistics.fmean(rescored["subset_scores"])
    same = math.isclose(rerun, search, rel_tol=1e-6, abs_tol=1e-9)
    text = f"{search:.3g} → {rerun:.3g}, {other:.3g}, {mean:.3g}"
    return Cell(text, {**rescored, "subset_mean": mean, "rerun_matches": same}, ok=same)


def rank_check(run_dir: Path, scale: float) -> Cell:
    result = read_json(RunLayout(run_dir).rank_check_result)
    got_scale = result.get("schedule_scale")
    note = "" if got_scale == scale else f" [scale x{got_scale:g}]"
    value = {k: result.get(k) for k in ("n", "tau", "tau_p", "rho", "rho_p", "schedule_scale", "degenerate", "message")}
    if result.get("degenerate") or result.get("tau") is None:
        raise Missing(f"rank check undefined (n={result.get('n')}): {result.get('message') or 'no tau'}{note}")
    text = f"{result['tau']:+.2f} (p {result['tau_p']:.2g}), {result['rho']:+.2f}; n {result['n']}{note}"
    return Cell(text, value, ok=result["tau"] >= TAU_AIM)


def baseline_rank(run_dir: Path) -> Cell:
    layout = RunLayout(run_dir)
    candidates = read_json(layout.rank_check_result).get("candidates") or []
    arch = read_json(layout.retrain_test(baseline_name(run_dir)))["arch"]
    found = [c for c in candidates if list(c["arch"]) == list(arch)]
    if not found:
        raise Missing(f"the rank check did not train the baseline {','.join(map(str, arch))}")
    base = found[0]

    def rank(key: str) -> int:
        return 1 + sum(1 for c in candidates if c[key] > base[key])

    value = {"n": len(candidates), "standalone_rank": rank("standalone_score"), "supernet_rank": rank("supernet_score")}
    return Cell(f"{value['standalone_rank']}, {value['supernet_rank']} of {value['n']}", value)


def comparison(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Entries of the run's own search and of random search, and k (see ``search_comparison``)."""
    from nasengine.studies.search_compare import search_comparison

    layout = RunLayout(run_dir)
    if not layout.config.exists():
        raise Missing(f"{run_dir} is not a run directory")
    own = own_strategy(run_dir)
    if own == COMPARED:
        raise Missing(f"the run's own search is {COMPARED}: nothing to compare with")
    found = search_comparison(run_dir, COMPARED)
    if found is None:
        folders = [f"search-{COMPARED}", "search"]
        empty = [str(layout.folder(f)) for f in folders if not layout.history(f).exists()]
        empty = empty or [str(layout.folder(f)) for f in folders]
        raise Missing(
            f"no candidates in {' or '.join(empty)}"
            + (
                f" (run 'nasengine search {run_dir} --strategy {COMPARED} --budget-like {own}')"
                if str(layout.folder(folders[0])) in empty
                else ""
            )
        )
    entries = found["strategies"]
    return entries[own], entries[COMPARED], found["k"]


def ea_vs_random(run_dir: Path) -> Cell:
    own, other, k = comparison(run_dir)
    a, b = own["final_top_k_mean"], other["final_top_k_mean"]
    if a is None or b is None:
        raise Missing(f"a final top-{k} mean is undefined (fewer than {k} scored candidates)")
    unfinished = "" if own.get("finished") and other.get("finished") else " [unfinished]"
    return Cell(f"{a:.3g} vs {b:.3g} (top-{k}){unfinished}", {"k": k, "evolution": own, "random": other}, ok=a >= b)


def reach(run_dir: Path) -> Cell:
    own, other, k = comparison(run_dir)

    def count(entry: dict[str, Any]) -> str:
        n = entry["to_reach_other_final"]
        return "never" if n is None else str(n)

    value = {"evolution": own["to_reach_other_final"], "random": other["to_reach_other_final"]}
    return Cell(f"{count(own)}, {count(other)} (of {own['candidates']}, {other['candidates']})", value)


def winner(run_dir: Path) -> Cell:
    layout = RunLayout(run_dir)
    best = read_json(layout.retrain_test("best"))
    name = baseline_name(run_dir)
    base = read_json(layout.retrain_test(name))
    a, b = float(best["test"]["score"]), float(base["test"]["score"])
    return Cell(f"{a:.4f} / {b:.4f}", {"winner": a, "baseline": b, "baseline_name": name}, ok=a >= b)


# --- the noise measure: rescoring the best candidate in this process -------------------------------
def noise_cache(out: Path, run_dir: Path) -> Path:
    """Where the noise measure of ``run_dir`` is cached: in this bench's folder, one file per run directory."""
    return out / "noise" / f"{run_key(run_dir)}.json"


def rescore_best(run_dir: Path, draws: int, draw_seed: int, cache: Path) -> dict[str, Any]:
    """The search's best rescored: run's calib and seed, seed+1, and ``draws`` other calib subsets.

    Cached in ``cache`` (keyed by the run directory's resolved path, architecture, draws, draw seed and the
    supernet file's size and time).
    """
    best = read_json(RunLayout(run_dir).best())
    key = {
        "run": str(run_dir.resolve()),
        "arch": list(best["arch"]),
        "draws": draws,
        "draw_seed": draw_seed,
        "supernet": supernet_stamp(run_dir),
        "replace": True,
    }
    try:
        cached = read_json(cache)
        if cached.get("key") == key:
            return cached["result"]
    except (NasEngineError, AttributeError):  # absent, unreadable or not a cache: computed again
        pass
    result = compute_rescore(run_dir, tuple(int(c) for c in best["arch"]), float(best["score"]), draws, draw_seed)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json(strict_json({"key": key, "result": result}), cache)
    except OSError as exc:
        say(f"could not cache the noise measure in {cache}: {exc}")
    return result


def supernet_stamp(run_dir: Path) -> list[float]:
    layout = RunLayout(run_dir)
    for phase in ("finetune", "pretrain"):
        path = layout.supernet(phase)
        if path.exists():
            return [path.stat().st_size, path.stat().st_mtime]
    raise Missing(f"no trained supernet in {run_dir} (finetune/supernet.pt)")


def compute_rescore(
    run_dir: Path, arch: tuple[int, ...], search_score: float, draws: int, draw_seed: int
) -> dict[str, Any]:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Subset

    from nasengine.protocol import distributed
    from nasengine.protocol.engine import Run
    from nasengine.protocol.search import evaluate_candidate

    run = Run.open(run_dir)
    task = run.search_task
    try:
        supernet, model = run.trained_search_model()  # the search's own
    except RuntimeError as exc:  # the space's or task's code (or defaults) changed since the run was made
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise Missing(
            f"{run_dir}'s trained supernet does not fit the model this code builds (space or task "
            f"changed since the run?): {lines[1] if len(lines) > 1 else lines[0]}"[:400]
        ) from None
    batch_size = run.config.search.batch_size
    search_loader = task.loader("search", train=False, batch_size=batch_size)
    calib_loader = task.loader("calib", train=False, batch_size=batch_size)
    pool = task.dataset("train", train=False)  # the pool the calib split is drawn from; excludes search
    calib_size = len(calib_loader.dataset)
    seed = run.config.seed

    def score(loader: DataLoader, calib_seed: int) -> float:
        return evaluate_candidate(arch, supernet, model, task, loader, search_loader, seed=calib_seed)["score"]

    started = time.perf_counter()
    with distributed.local_batchnorm(model), torch.no_grad():
        rerun = score(calib_loader, seed)
        other_seed = score(calib_loader, seed + 1)
        subsets = []
        for draw in range(draws):
            drawn = np.random.default_rng([draw_seed, 1, DRAW_SALT + draw]).choice(len(pool), calib_size)
            indices = sorted(int(i) for i in drawn)  # with replacement: see the module's docstring
            loader = DataLoader(Subset(pool, indices), batch_size=batch_size, shuffle=False, collate_fn=task.collate)
            subsets.append(score(loader, seed))
    return {
        "arch": list(arch),
        "search_score": search_score,
        "rerun_score": rerun,
        "other_seed_score": other_seed,
        "subset_scores": subsets,
        "calib_size": calib_size,
        "pool_size": len(pool),
        "draw_seed": draw_seed,
        "draw_seeds": [[draw_seed, 1, DRAW_SALT + d] for d in range(draws)],
        "seconds": round(time.perf_counter() - started, 1),
    }


# --- running the protocol -------------------------------------------------------------------------
def say(message: str) -> None:
    common.say("fidelity", message)


def run_command(arguments: Sequence[str], log: Path) -> str | None:
    return common.run_nasengine(arguments, log, bench="fidelity")


def ensure_run(runs: Path, seed: int, preset: str, from_existing: bool, logs: Path) -> str | None:
    """Run (or resume) the preset's protocol for ``seed`` unless it is complete; why it is not, or None."""
    run_dir = runs / f"seed{seed}"
    if run_complete(run_dir):
        say(f"seed {seed}: {run_dir} is complete; reading it")
        return None
    if from_existing:
        return f"{run_dir} is incomplete and --from-existing runs nothing"
    return run_command(
        ["run", "--preset", preset, "--seed", str(seed), "--out", str(run_dir), "--quiet"],
        logs / f"seed{seed}-run.log",
    )


def ensure_checks(run_dir: Path, rank_n: int, rank_scale: float, from_existing: bool, logs: Path) -> list[str]:
    """Random search and the rank check on ``run_dir``, each unless its result is there; failures."""
    failures = []
    if not RunLayout(run_dir).done(f"search-{COMPARED}").exists() and not from_existing:
        failure = run_command(
            ["search", str(run_dir), "--strategy", COMPARED, "--budget-like", own_strategy(run_dir), "--quiet"],
            logs / f"{run_dir.name}-search-{COMPARED}.log",
        )
        failures += [failure] if failure else []
    if not rank_check_current(run_dir, rank_n, rank_scale) and not from_existing:
        failure = run_command(
            ["rank-check", str(run_dir), "-n", str(rank_n), "--schedule-scale", f"{rank_scale:g}", "--quiet"],
            logs / f"{run_dir.name}-rank-check.log",
        )
        failures += [failure] if failure else []
    return failures


def own_strategy(run_dir: Path) -> str:
    return configuration.load(RunLayout(run_dir).config).search.strategy


def rank_check_current(run_dir: Path, rank_n: int, rank_scale: float) -> bool:
    """Whether the rank check's result holds a check at this scale with this many candidates."""
    try:
        result = read_json(RunLayout(run_dir).rank_check_result)
        candidates = len({tuple(r["arch"]) for r in history(run_dir)})
    except (Missing, NasEngineError):
        return False
    expected = min(rank_n, candidates)  # one more when the check added the space's baseline
    return result.get("schedule_scale") == rank_scale and result.get("n") in (expected, expected + 1)


# --- collecting and printing ----------------------------------------------------------------------
def collect(
    runs: Path, seeds: Sequence[int], check_seeds: Sequence[int], args: argparse.Namespace
) -> dict[str, dict[int, Cell]]:
    """Every measure of every seed."""
    rows: dict[str, dict[int, Cell]] = {key: {} for key in LABELS}
    for seed in seeds:
        cells = seed_measures(runs / f"seed{seed}", seed in check_seeds, args)
        for key, cell in cells.items():
            rows[key][seed] = cell
    return rows


def seed_measures(run_dir: Path, check: bool, args: argparse.Namespace) -> dict[str, Cell]:
    cells = {
        "wall_time": measure(wall_time, run_dir),
        "loss_ratio": measure(loss_ratio, run_dir),
        "distinct": measure(distinct_nonzero, run_dir),
        "spread": measure(spread, run_dir),
    }
    if args.no_noise:
        cells["noise"] = cells["rescore"] = Cell("n/a", reason="skipped (--no-noise)")
    else:
        cache = noise_cache(args.out, run_dir)
        if RunLayout(run_dir).done("search").exists() and not cache.exists():
            say(f"{run_dir.name}: rescoring the best candidate ({args.noise_draws} calib subsets + 2 reruns)")
        rescored = measure(lambda: Cell("", rescore_best(run_dir, args.noise_draws, args.draw_seed, cache)))
        if rescored.reason:
            cells["noise"] = cells["rescore"] = rescored
        else:
            cells["noise"] = measure(noise, run_dir, rescored.value)
            cells["rescore"] = measure(rescore, rescored.value)
    if check:
        cells["rank"] = measure(rank_check, run_dir, args.rank_scale)
        cells["baseline_rank"] = measure(baseline_rank, run_dir)
        cells["ea_vs_random"] = measure(ea_vs_random, run_dir)
        cells["reach"] = measure(reach, run_dir)
    else:
        cells["rank"] = cells["baseline_rank"] = cells["ea_vs_random"] = cells["reach"] = NOT_MEASURED
    cells["winner"] = measure(winner, run_dir)
    return cells


def met(key: str, cells: dict[int, Cell]) -> tuple[str, bool | None]:
    """The "met" column: seeds meeting the aim, and whether the row's aim is met as a whole."""
    known = [c.ok for c in cells.values() if c.ok is not None]
    if not AIMS[key] or not known:
        return ("n/a" if AIMS[key] else ""), None
    good = sum(known)
    if key == "winner":
        passed = good >= math.ceil(WINNER_SHARE_AIM * len(cells) - 1e-9)
        return f"{good}/{len(cells)} {'yes' if passed else 'no'}", passed
    return f"{good}/{len(known)}", good == len(known)


def table(
    rows: dict[str, dict[int, Cell]],
    seeds: Sequence[int],
    check_seeds: Sequence[int],
    args: argparse.Namespace,
    failures: dict[int, list[str]],
) -> Table:
    title = escape(
        f"fidelity of the {args.preset} preset: {len(seeds)} seed(s) in {args.runs}; checks on seed"
        f"{'s' if len(check_seeds) > 1 else ''} {','.join(map(str, check_seeds))} (rank check n={args.rank_n}, "
        f"schedules x{args.rank_scale:g})"
    )
    out = Table(title=title, title_justify="left", caption_justify="left")
    out.add_column("measure", no_wrap=True)
    for seed in seeds:
        out.add_column(f"seed {seed}", justify="right")
    out.add_column("aim")
    out.add_column("met", justify="right")
    reasons: dict[str, int] = {}
    for key, label in LABELS.items():
        texts = []
        for seed in seeds:
            cell = rows[key][seed]
            text = cell.text + ("" if cell.ok is None else (" ✓" if cell.ok else " ✗"))
            if cell.reason:
                number = reasons.setdefault(cell.reason, len(reasons) + 1)
                text = f"n/a [{number}]"
            texts.append(escape(text))
        out.add_row(label.format(draws=args.noise_draws), *texts, AIMS[key], met(key, rows[key])[0])
    notes = [f"[{n}] {reason}" for reason, n in reasons.items()]
    notes += [f"seed {seed}: {failure}" for seed, found in failures.items() for failure in found]
    if notes:
        out.caption = escape("\n".join(notes))
    return out


def write_results(
    path: Path,
    rows: dict[str, dict[int, Cell]],
    args: argparse.Namespace,
    seeds: Sequence[int],
    failures: dict[int, list[str]],
    seconds: float,
) -> None:
    measures = {
        key: {
            "label": LABELS[key].format(draws=args.noise_draws),
            "aim": AIMS[key],
            "met": met(key, cells)[1],
            "seeds": {
                seed: ({"text": c.text, "ok": c.ok, **c.value} if not c.reason else {"text": "n/a", "reason": c.reason})
                if c is not NOT_MEASURED
                else None
                for seed, c in cells.items()
            },
        }
        for key, cells in rows.items()
    }
    document = {
        "preset": args.preset,
        "runs": str(args.runs),
        "out": str(args.out),
        "seeds": list(seeds),
        "check_seeds": args.check_seeds,
        "rank_n": args.rank_n,
        "rank_scale": args.rank_scale,
        "noise_draws": args.noise_draws,
        "draw_seed": args.draw_seed,
        "measures": measures,
        "failures": failures,
        "seconds": round(seconds, 1),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(strict_json(document), path)


# --- command line ---------------------------------------------------------------------------------
def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated integers, not {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds needs at least one seed and no repeats, not {text!r}")
    return seeds


def scale(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and 0 < value <= 1):
        raise argparse.ArgumentTypeError(f"--rank-scale must be in (0, 1], not {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--runs", type=output_folder, default=Path("runs/fidelity"), help="folder of the run directories (seed<S>/)"
    )
    parser.add_argument(
        "--out",
        type=output_folder,
        help="where fidelity.json, the commands' logs and the noise cache go (default: the --runs folder)",
    )
    parser.add_argument("--seeds", type=parse_seeds, default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--preset", default="demo", help="the preset every seed runs")
    parser.add_argument(
        "--check-seeds",
        default="0",
        help="comma-separated seeds (or 'all') whose runs get the rank check and the random search",
    )
    parser.add_argument("--rank-n", type=int, default=8, help="candidates the rank check trains standalone (>= 2)")
    parser.add_argument("--rank-scale", type=scale, default=1.0, help="the rank check's --schedule-scale")
    parser.add_argument(
        "--noise-draws",
        type=int,
        default=8,
        help="other calib subsets the best candidate is rescored with (with 3, a standard deviation is only "
        "known within a factor of about 2)",
    )
    parser.add_argument("--no-noise", action="store_true", help="skip the noise measure (it loads the supernet)")
    parser.add_argument(
        "--from-existing",
        action="store_true",
        help="run no nasengine command: only read the run directories there are (the noise "
        "measure is still computed, or read from its cache)",
    )
    parser.add_argument(
        "--draw-seed",
        type=int,
        default=0,
        help="first numpy seed of the noise measure's calib subsets ([draw_seed, 1, 1000 + d]; 0 draws what "
        "the built-in tasks' default split_seed drew)",
    )
    args = parser.parse_args(argv)
    args.out = args.out or args.runs
    if args.check_seeds == "all":
        args.check_seeds = list(args.seeds)
    else:
        try:
            args.check_seeds = parse_seeds(args.check_seeds)
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc).replace("--seeds", "--check-seeds"))
        strangers = [seed for seed in args.check_seeds if seed not in args.seeds]
        if strangers:
            parser.error(
                f"--check-seeds {','.join(map(str, strangers))} not among --seeds {','.join(map(str, args.seeds))}"
            )
    if args.rank_n < 2:
        parser.error(f"--rank-n must be at least 2, not {args.rank_n}")
    if args.noise_draws < 2:
        parser.error(f"--noise-draws must be at least 2 (a standard deviation), not {args.noise_draws}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    failures: dict[int, list[str]] = {}
    for seed in args.seeds:
        failure = ensure_run(args.runs, seed, args.preset, args.from_existing, args.out / "logs")
        failures[seed] = [failure] if failure else []
    for seed in args.check_seeds:
        check_dir = args.runs / f"seed{seed}"
        if not failures[seed] and RunLayout(check_dir).done("search").exists():
            failures[seed] += ensure_checks(
                check_dir, args.rank_n, args.rank_scale, args.from_existing, args.out / "logs"
            )
    rows = collect(args.runs, args.seeds, args.check_seeds, args)
    seconds = time.perf_counter() - started
    console = Console()
    if not console.is_terminal:  # a file or a pipe: wide enough for one line per row
        console = Console(width=160)
    console.print(table(rows, args.seeds, args.check_seeds, args, failures))
    write_results(args.out / "fidelity.json", rows, args, args.seeds, failures, seconds)
    print(f"numbers: {args.out / 'fidelity.json'}; bench wall time {seconds:.0f} s")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        say("interrupted; run the same command again to resume (every phase is resumable)")
        sys.exit(130)
