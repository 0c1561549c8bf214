"""The entry-point registry: discovery, clear errors for unknown and broken plugins."""

from importlib.metadata import EntryPoint

import pytest

from nasengine import registry
from nasengine.errors import NasEngineError


def test_builtins_are_found_through_entry_points():
    assert {"shufflenet-small", "shufflenet-large"} <= set(registry.plugins("space"))
    assert {"evolution", "random"} <= set(registry.plugins("strategy"))
    assert {"fashion-mnist", "imagenet", "coco-fpn", "coco-retinanet", "voc-fpn", "voc-retinanet"} <= set(
        registry.plugins("task")
    )
    plugin = registry.plugins("space")["shufflenet-small"]
    assert plugin.source.startswith("nasengine ")


def test_unknown_name_lists_known_names():
    with pytest.raises(NasEngineError) as info:
        registry.get("space", "resnet-9000")
    message = str(info.value)
    assert "unknown space 'resnet-9000'" in message
    assert "shufflenet-small" in message and "shufflenet-large" in message
    assert "\n" not in message


def test_broken_plugin_is_reported_and_others_still_load(monkeypatch):
    good = EntryPoint("fine", "nasengine.registry:Plugin", "nasengine.spaces")
    broken = EntryPoint("broken", "no_such_module_xyz:Thing", "nasengine.spaces")
    monkeypatch.setattr(registry, "entry_points", lambda group: [broken, good])
    found = registry.plugins("space")
    assert found["fine"].cls is registry.Plugin
    assert found["broken"].cls is None
    assert "ModuleNotFoundError" in found["broken"].error and "no_such_module_xyz" in found["broken"].error
    with pytest.raises(NasEngineError, match="space 'broken' .* failed to import: ModuleNotFoundError"):
        registry.get("space", "broken")


def test_bad_options_name_the_plugin():
    with pytest.raises(NasEngineError, match="space 'shufflenet-small' takes no options, so not 'colour'; remove it"):
        registry.create("space", "shufflenet-small", colour="blue")


def test_a_constructor_taking_any_options_checks_its_own():
    class Anything:
        def __init__(self, choices, constraint, seed, **params):
            if params:
                raise TypeError(f"unexpected {sorted(params)}")

    assert registry.declared_options(Anything, "strategy") is None
    assert registry.declared_options(registry.get("strategy", "random"), "strategy") == [
        "population",
        "generations",
        "max_tries",
    ]
