"""FLOPs and parameters: fvcore counting rules, the lookup table against full traces, the paper's values,
the FLOPs range, the disk cache and the fallback for spaces without ``cost_parts``."""

import itertools
import json
import random

import pytest
import torch
from torch import nn

from nasengine import flops
from nasengine.errors import NasEngineError
from nasengine.flops import CostTable, cost_of, cost_table, count_params, flops_range, trace_flops
from nasengine.interfaces import Space
from nasengine.spaces.shufflenet import ShuffleNetLarge, ShuffleNetSmall


class ToySpace(Space):
    """Conv stem, three positions of 1×1/3×3/5×5 convs, a pooled linear head: small enough to enumerate."""

    name = "toy-flops-test"
    choices = (2, 3, 2)
    out_channels = [8]
    named = {}

    def _block(self, choice):
        return nn.Sequential(nn.Conv2d(8, 8, (1, 3, 5)[choice], padding=choice), nn.BatchNorm2d(8), nn.ReLU())

    def _head(self):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def build_network(self, arch):
        return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), *(self._block(c) for c in arch), self._head())

    def cost_parts(self, image_size):
        size = (image_size + 1) // 2
        yield None, None, nn.Conv2d(3, 8, 3, 2, 1), (1, 3, image_size, image_size)
        yield None, None, self._head(), (1, 8, size, size)
        for position, n in enumerate(self.choices):
            for choice in range(n):
                yield position, choice, self._block(choice), (1, 8, size, size)

    def build_supernet(self):
        raise NotImplementedError

    def extract_network(self, supernet, arch):
        raise NotImplementedError


class UnsplitToySpace(ToySpace):
    name = "toy-flops-test-unsplit"
    cost_parts = Space.cost_parts


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """An empty disk cache and an empty in-memory table cache."""
    monkeypatch.setenv("NASENGINE_CACHE", str(tmp_path))
    monkeypatch.setattr(flops, "_tables", {})
    monkeypatch.setattr(flops, "_traced", {})
    return tmp_path / "flops"


def test_trace_counts_convolutions_and_linear_layers_only():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    model.train()
    running_mean = model[1].running_mean.clone()
    expected = 8 * 10 * 10 * 3 * 9 + 8 * 10 * 10 * 9 + 8 * 10
    assert trace_flops(model, 10) == expected
    assert trace_flops(model, (1, 3, 10, 10)) == expected
    assert model.training and torch.equal(model[1].running_mean, running_mean)


def test_published_backbones_have_the_papers_macs():
    small, large = ShuffleNetSmall(), ShuffleNetLarge()
    coco_fpn_300m = small.named["detnas-coco-fpn-300m"]
    assert small.flops(coco_fpn_300m) == 288_082_368
    assert large.flops(large.named["detnasnet"]) == 1_269_181_536
    network = small.build_network(coco_fpn_300m)
    assert trace_flops(network, 224) == 288_082_368
    assert small.params(coco_fpn_300m) == count_params(network)


@pytest.mark.parametrize("space, image_size", [
    (ShuffleNetSmall(), 64), (ShuffleNetSmall(), 97), (ShuffleNetLarge(), 64), (ShuffleNetLarge(width="3.8G"), 64),
], ids=["small-64", "small-97", "large-64", "large-3.8G-64"])
def test_lookup_table_equals_a_full_trace(space, image_size):
    rng = random.Random(image_size)
    for arch in [tuple(rng.randrange(n) for n in space.choices) for _ in range(2)]:
        network = space.build_network(arch)
        cost = cost_of(space, arch, image_size)
        assert cost.flops == trace_flops(network, image_size)
        assert cost.params == count_params(network)


def test_toy_table_equals_full_traces_for_every_arch_and_its_range_is_exact(private_cache):
    space = ToySpace()
    traced = {}
    for arch in itertools.product(*(range(n) for n in space.choices)):
        network = space.build_network(arch)
        traced[arch] = trace_flops(network, 12)
        assert cost_of(space, arch, 12) == flops.Cost(traced[arch], count_params(network))
    assert flops_range(space, 12) == (min(traced.values()), max(traced.values()))


def test_flops_range_is_spanned_by_the_cheapest_and_most_expensive_picks():
    space = ShuffleNetSmall()
    table = cost_table(space, 64)
    cheapest = tuple(row.index(min(row)) for row in table.flops)
    dearest = tuple(row.index(max(row)) for row in table.flops)
    low, high = flops_range(space, 64)
    assert low == trace_flops(space.build_network(cheapest), 64)
    assert high == trace_flops(space.build_network(dearest), 64)
    rng = random.Random(0)
    for _ in range(200):
        assert low <= space.flops(tuple(rng.randrange(4) for _ in range(20)), 64) <= high


def test_table_is_cached_on_disk_and_read_back(private_cache, monkeypatch):
    space = ToySpace()
    first = cost_table(space, 16)
    files = list(private_cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".json"
    assert json.loads(files[0].read_text())["key"]["image_size"] == 16

    def no_build(*args):
        raise AssertionError("the table should come from the disk cache")

    monkeypatch.setattr(flops, "_tables", {})
    monkeypatch.setattr(CostTable, "build", classmethod(no_build))
    second = cost_table(space, 16)
    assert second is not first and second.to_json() == first.to_json()
    assert cost_table(space, 16) is second  # then from memory


def test_unreadable_cache_file_is_rebuilt(private_cache, monkeypatch):
    space = ToySpace()
    expected = cost_table(space, 16).to_json()
    path = flops.table_path(space, 16)
    path.write_text("{not json")
    monkeypatch.setattr(flops, "_tables", {})
    assert cost_table(space, 16).to_json() == expected
    assert json.loads(path.read_text())["flops"] == expected["flops"]
    assert [p.name for p in private_cache.iterdir()] == [path.name]  # no temporary files left behind


def test_options_and_image_size_get_their_own_tables():
    assert flops.table_path(ShuffleNetLarge(), 224) != flops.table_path(ShuffleNetLarge(width="3.8G"), 224)
    assert flops.table_path(ShuffleNetSmall(), 224) != flops.table_path(ShuffleNetSmall(), 64)


def test_space_without_cost_parts_falls_back_to_a_full_trace(private_cache):
    space = UnsplitToySpace()
    network = space.build_network((1, 2, 0))
    assert cost_of(space, (1, 2, 0), 12) == flops.Cost(trace_flops(network, 12), count_params(network))
    with pytest.raises(NasEngineError, match="does not implement cost_parts"):
        flops_range(space, 12)


@pytest.mark.parametrize("arch", [(0, 0), (0, 3, 0), (0, -1, 0)])
def test_architectures_outside_the_table_are_refused(arch, private_cache):
    with pytest.raises(NasEngineError, match="does not fit"):
        cost_of(ToySpace(), arch, 12)


@pytest.mark.parametrize("change", ["missing", "twice"])
def test_incomplete_cost_parts_are_reported(change, monkeypatch):
    space = ToySpace()
    parts = list(space.cost_parts(8))
    parts = parts[:-1] if change == "missing" else [*parts, parts[-1]]
    monkeypatch.setattr(space, "cost_parts", lambda image_size: iter(parts))
    with pytest.raises(NasEngineError, match="did not yield every choice" if change == "missing" else "twice"):
        CostTable.build(space, 8)
