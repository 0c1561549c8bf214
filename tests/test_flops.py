"""FLOPs and parameters: fvcore counting rules (convolutions and linear layers, no BN), the lookup table
against full traces, the paper's values, the FLOPs range, image sizes, the disk cache and the full-trace
fallback for spaces without ``cost_parts``.

Every test runs on a private cache, so tables are built by the code under test, never read from the
user's cache. Traces run on one intra-op thread: a batch-1 trace gains nothing from more, and on the
shared 2-core machines two threads per process oversubscribe the cores (measured 5–50× slower).
"""

import itertools
import json
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from nasengine import flops
from nasengine.errors import NasEngineError
from nasengine.flops import Cost, CostTable, cost_of, cost_table, count_params, flops_range, trace_flops
from nasengine.interfaces import Arch, Space
from nasengine.spaces.shufflenet import ShuffleNetLarge, ShuffleNetSmall

COCO_FPN_300M = (2, 1, 2, 0, 2, 1, 1, 2, 3, 3, 1, 3, 0, 0, 3, 1, 3, 1, 3, 2)
DETNASNET = (
    0,
    0,
    3,
    1,
    2,
    1,
    0,
    2,
    0,
    3,
    1,
    2,
    3,
    3,
    2,
    0,
    2,
    1,
    1,
    3,
    2,
    0,
    2,
    2,
    2,
    1,
    3,
    1,
    0,
    3,
    3,
    3,
    1,
    3,
    3,
    3,
    3,
    3,
    3,
    3,
)
TOY_KERNELS = (1, 3, 5)


class ToySpace(Space):
    """Conv stem, three positions of 1×1/3×3/5×5 conv + BN + ReLU, a pooled linear head: small enough to
    enumerate and to count by hand (``toy_macs``)."""

    name = "toy-flops-test"
    choices = (2, 3, 2)
    out_channels = [8]
    named: dict[str, Arch] = {}

    def _stem(self) -> nn.Module:
        return nn.Conv2d(3, 8, 3, 2, 1)

    def _block(self, choice: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(8, 8, TOY_KERNELS[choice], padding=choice), nn.BatchNorm2d(8), nn.ReLU())

    def _head(self) -> nn.Module:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def build_network(self, arch: Arch) -> nn.Module:
        return nn.Sequential(self._stem(), *(self._block(c) for c in arch), self._head())

    def cost_parts(self, image_size: int) -> Iterator[tuple[int | None, int | None, nn.Module, tuple[int, ...]]]:
        size = (image_size + 1) // 2
        yield None, None, self._stem(), (1, 3, image_size, image_size)
        yield None, None, self._head(), (1, 8, size, size)
        for position, n in enumerate(self.choices):
            for choice in range(n):
                yield position, choice, self._block(choice), (1, 8, size, size)

    def build_supernet(self) -> nn.Module:
        raise NotImplementedError

    def extract_network(self, supernet: nn.Module, arch: Arch) -> nn.Module:
        raise NotImplementedError


class UnsplitToySpace(ToySpace):
    """The toy network from a space that does not implement ``cost_parts``."""

    name = "toy-flops-test-unsplit"
    cost_parts = Space.cost_parts


def toy_macs(arch: Arch, image_size: int) -> int:
    """The toy network's multiply-accumulates counted by hand: convolutions and the linear layer only."""
    pixels = ((image_size + 1) // 2) ** 2
    return pixels * 8 * 3 * 9 + sum(pixels * 8 * 8 * TOY_KERNELS[c] ** 2 for c in arch) + 8 * 5


def random_archs(space: Space, count: int, seed: int) -> list[Arch]:
    rng = random.Random(seed)
    return [tuple(rng.randrange(n) for n in space.choices) for _ in range(count)]


@pytest.fixture(scope="module", autouse=True)
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One private cache (disk and memory) shared by this module's tests, and one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NASENGINE_CACHE", str(tmp_path_factory.mktemp("nasengine-cache")))
        patch.setattr(flops, "_tables", {})
        patch.setattr(flops, "_traced", {})
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty disk cache and empty in-memory caches for one test; returns the tables' folder."""
    monkeypatch.setenv("NASENGINE_CACHE", str(tmp_path))
    monkeypatch.setattr(flops, "_tables", {})
    monkeypatch.setattr(flops, "_traced", {})
    return tmp_path / "flops"


def test_trace_counts_convolutions_and_linear_layers_but_not_batch_norm():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # fvcore.nn's import warns about torch.jit.script
        from fvcore.nn import FlopCountAnalysis

    conv = nn.Conv2d(3, 8, 3, padding=1)
    conv_bn = nn.Sequential(conv, nn.BatchNorm2d(8))
    assert trace_flops(conv, 10) == trace_flops(conv_bn, 10) == 8 * 10 * 10 * 3 * 9  # bias adds nothing
    # fvcore's stock counter does count the BN this module traces to, so the rule above is ours
    assert FlopCountAnalysis(conv_bn.eval(), torch.zeros(1, 3, 10, 10)).unsupported_ops_warnings(False).total() > (
        8 * 10 * 10 * 3 * 9
    )

    model = nn.Sequential(
        conv_bn,
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    expected = 8 * 10 * 10 * 3 * 9 + 8 * 10 * 10 * 9 + 8 * 10
    model.train()
    running_mean = model[0][1].running_mean.clone()
    assert trace_flops(model, 10) == expected
    assert trace_flops(model, (1, 3, 10, 10)) == expected
    assert model.training and torch.equal(model[0][1].running_mean, running_mean)


def test_published_backbones_have_the_papers_macs_by_table_and_by_trace():
    small, large = ShuffleNetSmall(), ShuffleNetLarge()
    assert large.named["detnasnet"] == DETNASNET
    for space, arch, macs in ((small, COCO_FPN_300M, 288_082_368), (large, DETNASNET, 1_269_181_536)):
        network = space.build_network(arch)
        assert cost_of(space, arch).flops == trace_flops(network, 224) == macs
        assert cost_of(space, arch).params == count_params(network)


@pytest.mark.parametrize(
    "space, archs",
    [
        (ShuffleNetSmall(), 4),
        (ShuffleNetLarge(), 2),
        (ShuffleNetLarge(width="3.8G"), 1),
    ],
    ids=["small", "large", "large-3.8G"],
)
def test_lookup_table_equals_a_full_trace(space, archs):
    for arch in random_archs(space, archs, seed=len(space.choices) + archs):
        network = space.build_network(arch)
        assert cost_of(space, arch) == Cost(trace_flops(network, 224), count_params(network)), arch


def test_flops_range_is_spanned_by_the_per_position_cheapest_and_dearest_picks():
    space = ShuffleNetSmall()
    table = cost_table(space, 224)
    cheapest = tuple(row.index(min(row)) for row in table.flops)
    dearest = tuple(row.index(max(row)) for row in table.flops)
    # the picks differ by position: a stage's strided first block is cheapest as the Xception unit and
    # dearest as the 7×7 unit (its left branch), the others cheapest as 3×3 and dearest as Xception
    firsts = {0, 4, 8, 16}
    assert cheapest == tuple(3 if p in firsts else 0 for p in range(20))
    assert dearest == tuple(2 if p in firsts else 3 for p in range(20))
    low, high = flops_range(space, 224)
    assert low == trace_flops(space.build_network(cheapest), 224)
    assert high == trace_flops(space.build_network(dearest), 224)
    assert all(low < cost_of(space, arch).flops < high for arch in random_archs(space, 500, seed=1))


def test_every_toy_arch_matches_its_trace_and_the_range_is_exact():
    space = ToySpace()
    counts = {}
    for arch in itertools.product(*(range(n) for n in space.choices)):
        network = space.build_network(arch)
        counts[arch] = toy_macs(arch, 12)
        assert trace_flops(network, 12) == counts[arch]
        assert cost_of(space, arch, 12) == Cost(counts[arch], count_params(network))
    assert flops_range(space, 12) == (min(counts.values()), max(counts.values()))


def test_another_image_size_gets_its_own_matching_count():
    space = ShuffleNetSmall()
    network = space.build_network(COCO_FPN_300M)
    at_97 = cost_of(space, COCO_FPN_300M, 97).flops  # odd: every stride-2 layer rounds up
    assert at_97 == trace_flops(network, 97)
    assert at_97 != cost_of(space, COCO_FPN_300M, 224).flops
    assert flops_range(space, 97) != flops_range(space, 224)
    assert flops.table_path(space, 97) != flops.table_path(space, 224)


def test_options_get_their_own_tables():
    assert flops.table_path(ShuffleNetLarge(), 224) != flops.table_path(ShuffleNetLarge(width="3.8G"), 224)


def test_table_is_cached_on_disk_and_read_back_with_one_check_trace(private_cache, monkeypatch):
    space = ShuffleNetSmall()
    first = cost_table(space, 32)
    files = list(private_cache.iterdir())
    assert files == [flops.table_path(space, 32)]
    saved = json.loads(files[0].read_text())
    assert saved["key"]["space"] == "shufflenet-small" and saved["key"]["image_size"] == 32
    assert saved["flops"] == first.flops and saved["params"] == first.params

    traced, real = [], flops.trace_flops
    monkeypatch.setattr(flops, "trace_flops", lambda module, shape: traced.append(shape) or real(module, shape))
    monkeypatch.setattr(flops, "_tables", {})
    second = cost_table(space, 32)
    assert len(traced) == 1  # one full-network check of a random arch, not a rebuild of the table's parts
    assert second is not first and second.to_json() == first.to_json()
    assert cost_of(space, COCO_FPN_300M, 32).flops == first.cost(COCO_FPN_300M).flops
    assert cost_table(space, 32) is second  # then from memory


def test_unreadable_cache_file_is_rebuilt(private_cache, monkeypatch):
    space = ToySpace()
    expected = cost_table(space, 16).to_json()
    path = flops.table_path(space, 16)
    path.write_text("{not json")
    monkeypatch.setattr(flops, "_tables", {})
    assert cost_table(space, 16).to_json() == expected
    assert json.loads(path.read_text())["flops"] == expected["flops"]
    assert [p.name for p in private_cache.iterdir()] == [path.name]  # no temporary files left behind


def test_space_without_cost_parts_falls_back_to_a_full_trace(private_cache, monkeypatch):
    space = UnsplitToySpace()
    arch = (1, 2, 0)
    network = space.build_network(arch)
    assert cost_of(space, arch, 12) == Cost(toy_macs(arch, 12), count_params(network))
    assert cost_of(space, arch, 224).flops == toy_macs(arch, 224)
    assert not private_cache.exists() or not any(private_cache.iterdir())  # no table was built
    with pytest.raises(NasEngineError, match="does not implement cost_parts"):
        flops_range(space, 12)

    monkeypatch.setattr(flops, "trace_flops", lambda *args: pytest.fail("a traced answer is remembered"))
    assert cost_of(space, arch, 12).flops == toy_macs(arch, 12)


@pytest.mark.parametrize("arch", [(0, 0), (0, 3, 0), (0, -1, 0)])
def test_architectures_outside_the_table_are_refused(arch, private_cache):
    with pytest.raises(NasEngineError, match="does not fit"):
        cost_of(ToySpace(), arch, 12)


@pytest.mark.parametrize("change", ["missing", "twice"])
def test_incomplete_cost_parts_are_reported(change: str, monkeypatch: pytest.MonkeyPatch):
    space = ToySpace()
    parts = list(space.cost_parts(8))
    parts = parts[:-1] if change == "missing" else [*parts, parts[-1]]
    monkeypatch.setattr(space, "cost_parts", lambda image_size: iter(parts))
    with pytest.raises(NasEngineError, match="did not yield every choice" if change == "missing" else "twice"):
        CostTable.build(space, 8)


def test_a_shared_module_is_traced_once_per_input_shape(monkeypatch: pytest.MonkeyPatch):
    space = ToySpace()
    space.choices = (2, 1)
    conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    big, small = (1, 8, 6, 6), (1, 8, 4, 4)
    parts = [(None, None, conv, big), (0, 0, conv, big), (0, 1, conv, small), (1, 0, conv, small)]
    monkeypatch.setattr(space, "cost_parts", lambda image_size: iter(parts))
    traced = []

    def counting_trace(module: nn.Module, input_shape: tuple[int, ...]) -> int:
        traced.append(input_shape)
        return trace_flops(module, input_shape)

    monkeypatch.setattr(flops, "trace_flops", counting_trace)
    table = CostTable.build(space, 12)
    assert traced == [big, small]
    assert table.fixed.flops == 36 * 8 * 8 * 9
    assert table.flops == [[36 * 8 * 8 * 9, 16 * 8 * 8 * 9], [16 * 8 * 8 * 9]]


@pytest.mark.parametrize("limits, warned", [({"flops_max": 250e6}, True), ({"flops_min": 270e6}, True), ({}, False)])
def test_a_baseline_outside_the_flops_limits_is_warned_of(limits, warned, capsys):
    from nasengine import registry
    from nasengine.protocol.limits import run_limits
    from nasengine.protocol.preflight import warn_if_the_baseline_is_outside
    from nasengine.settings import config as configuration

    config = configuration.resolve("smoke", overrides={"search": {"flops_max": 300e6, **limits}})
    space = registry.create("space", "shufflenet-small")
    warn_if_the_baseline_is_outside(space, run_limits(space, config.search, input_size=64))
    out = " ".join(capsys.readouterr().out.split())
    assert ("the baseline shufflenetv2-20 (flops 262.7 M MACs) is outside the search's limits" in out) == warned
    assert ("retrain_baseline = false" in out) == warned
