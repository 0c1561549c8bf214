"""Configuration: presets, TOML files, overrides, and the paper's dataset-dependent rules."""

import pytest

from nasengine import registry
from nasengine.errors import NasEngineError
from nasengine.settings import config


def test_precedence_preset_then_file_then_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("seed = 5\n[pretrain_schedule]\niterations = 77\n[search.strategy_options]\npopulation = 7\n")
    resolved = config.resolve("demo", path, {"seed": 9})
    assert resolved.seed == 9
    assert resolved.pretrain_schedule.iterations == 77
    assert resolved.pretrain_schedule.batch_size == config.PRESETS["demo"]["pretrain_schedule"]["batch_size"]
    assert resolved.search.strategy_options["population"] == 7
    assert resolved.search.strategy_options["generations"] == 3


def test_saved_config_round_trips(tmp_path):
    resolved = config.resolve("paper", overrides={"task": "voc-retinanet", "search": {"flops_min": 1e8}})
    config.save(resolved, tmp_path / "config.toml")
    assert config.load(tmp_path / "config.toml") == resolved


def test_paper_rules():
    assert config.resolve("paper").finetune_schedule.iterations == 90_000
    assert config.resolve("paper", overrides={"task": "voc-fpn"}).finetune_schedule.iterations == 22_500
    scratch = config.resolve("paper", overrides={"pretrain": False})
    assert scratch.finetune_schedule.iterations == 180_000


def test_unknown_keys_and_presets_are_clear(tmp_path):
    with pytest.raises(NasEngineError, match="unknown preset 'fast'; known presets: paper, demo, smoke"):
        config.resolve("fast")
    with pytest.raises(NasEngineError, match="unknown config key pretrain_schedule.'iters'"):
        config.resolve("demo", overrides={"pretrain_schedule": {"iters": 3}})
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 3")
    with pytest.raises(NasEngineError, match="is not valid TOML"):
        config.resolve("demo", bad)


def test_preset_options_are_given_per_plugin_name():
    random_search = config.resolve("demo", overrides={"search": {"strategy": "random"}})
    assert random_search.search.strategy_options == {"population": 8, "generations": 3}
    assert config.resolve("demo").search.strategy_options == {"population": 8, "top_k": 3, "generations": 3}
    smoke = config.resolve("smoke")
    assert smoke.task_options == {"search_size": 6, "calib_size": 4, "test_size": 6}
    assert smoke.pretrain_task_options == {"search_size": 64, "calib_size": 16, "test_size": 64}
    # a plugin the preset does not name (here a third-party strategy) gets none of the built-ins' options
    assert config.resolve("demo", overrides={"search": {"strategy": "hill-climb"}}).search.strategy_options == {}
    explicit = config.resolve("demo", overrides={"search": {"strategy": "random", "strategy_options": {"top_k": 2}}})
    assert explicit.search.strategy_options["top_k"] == 2  # the user's own options are never dropped...
    with pytest.raises(NasEngineError, match="strategy 'random' has no option 'top_k'; its options: population"):
        registry.check_options("strategy", "random", explicit.search.strategy_options)  # ...but refused in one line


def test_options_by_name_from_file_and_set_reach_only_the_plugin_in_use(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        "[options.strategy.random]\npopulation = 6\n[options.strategy.evolution]\ntop_k = 4\n"
        "[options.task.voc-fpn]\nsearch_size = 50\n"
    )
    evolution = config.resolve("demo", path)
    assert evolution.search.strategy_options == {"population": 8, "top_k": 4, "generations": 3}
    assert evolution.task_options == {"search_size": 300, "calib_size": 1024}  # coco-fpn: voc-fpn's are not its
    overrides = {
        "search": {"strategy": "random"},
        "task": "voc-fpn",
        "options": {"strategy": {"random": {"generations": 2}}},
    }
    random_search = config.resolve("demo", path, overrides)
    assert random_search.search.strategy_options == {"population": 6, "generations": 2}
    assert random_search.task_options == {"search_size": 50, "calib_size": 1024}
    direct = config.resolve("demo", path, {"search": {"strategy_options": {"top_k": 2}}})
    assert direct.search.strategy_options["top_k"] == 2  # options given directly win over the per-name tables
    assert "options" not in direct.to_dict()  # config.toml keeps the resolved options of the plugins in use
