"""Plugin conformance (``nasengine.testing`` and ``nasengine check``): the built-in plugins pass, each kind of
broken plugin fails with its one-line message, the engine refuses a strategy's illegal asks and a broken
space before anything is written, and the FLOPs cache follows helper modules and verifies what it reads.

Every test runs on a private cache and one intra-op thread; the detection data is the embedded set, generated
small.
"""

from __future__ import annotations

import functools
import importlib
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from nasengine import flops, registry
from nasengine.cli import cli
from nasengine.errors import ConstraintUnsatisfiable, NasEngineError
from nasengine.flops import CostTable, cost_of, cost_table, count_params, trace_flops
from nasengine.interfaces import Arch, Space, Strategy, Supernet, Task
from nasengine.protocol.limits import run_limits
from nasengine.protocol.search import run_search
from nasengine.settings.config import SearchConfig
from nasengine.tasks import embedded_detection
from nasengine.testing import check_space, check_strategy, check_task

TINY_DATA = {"canvas_size": 64, "num_train": 16, "num_test": 6}
TINY_COCO = {
    "min_size": 64,
    "max_size": 64,
    "fpn_channels": 32,
    "batch_size": 2,
    "search_size": 4,
    "calib_size": 2,
    "test_size": 4,
    "proposals_per_image": 20,
    "rois_per_image": 16,
}


@pytest.fixture(scope="module", autouse=True)
def private_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A private cache (tables and the embedded detection data, generated small) and one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NASENGINE_CACHE", str(tmp_path_factory.mktemp("cache")))
        patch.setattr(flops, "_tables", {})
        patch.setattr(flops, "_traced", {})
        embedded_detection.ensure_embedded_detection_data(**TINY_DATA)
        patch.setattr(
            embedded_detection,
            "ensure_embedded_detection_data",
            functools.partial(embedded_detection.ensure_embedded_detection_data, **TINY_DATA),
        )
        yield
    torch.set_num_threads(threads)


def one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- a small space and its broken copies ---------------------------------------------------------
CHANNELS = [8, 16, 32, 64]
KERNELS = (3, 5)


def conv_block(c_in: int, c_out: int, kernel: int, stride: int = 2) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


class GoodSupernet(Supernet):
    """A stem and ``depth`` positions of a 3×3 or 5×5 conv, each halving the size: maps at strides 4, 8, 16, 32;
    ``forward`` returns the first ``maps`` of them."""

    def __init__(self, depth: int = 4, stem_stride: int = 2, maps: int = 4):
        super().__init__()
        self.maps = maps
        self.stem = conv_block(3, 8, 3, stem_stride)
        inputs = [8, *CHANNELS[:-1]]
        self.stages = nn.ModuleList(
            nn.ModuleList(conv_block(i, o, k) for k in KERNELS) for i, o in zip(inputs[:depth], CHANNELS)
        )

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x, features = self.stem(images), []
        for stage, choice in zip(self.stages, self.arch):
            x = stage[choice](x)
            features.append(x)
        return features[: self.maps]


class GoodNetwork(nn.Module):
    def __init__(self, arch: Arch, stem_stride: int = 2, maps: int = 4):
        super().__init__()
        self.maps = maps
        self.stem = conv_block(3, 8, 3, stem_stride)
        inputs = [8, *CHANNELS[:-1]]
        self.stages = nn.ModuleList(conv_block(i, o, KERNELS[c]) for i, o, c in zip(inputs, CHANNELS, arch))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x, features = self.stem(images), []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features[: self.maps]


class GoodSpace(Space):
    name = "conformance-good"
    choices = (2, 2, 2, 2)
    out_channels = CHANNELS
    baseline_name = "all-3x3"
    stem_stride = 2
    maps = 4

    def __init__(self) -> None:
        self.named = {"all-3x3": (0, 0, 0, 0), "all-5x5": (1, 1, 1, 1)}

    def build_supernet(self) -> GoodSupernet:
        return GoodSupernet(len(self.choices), self.stem_stride, self.maps)

    def build_network(self, arch: Arch) -> GoodNetwork:
        return GoodNetwork(arch, self.stem_stride, self.maps)

    def extract_network(self, supernet: GoodSupernet, arch: Arch) -> GoodNetwork:
        network = self.build_network(arch)
        network.stem.load_state_dict(supernet.stem.state_dict())
        for stage, options, choice in zip(network.stages, supernet.stages, arch):
            stage.load_state_dict(options[choice].state_dict())
        return network

    def cost_parts(self, image_size: int):
        yield None, None, conv_block(3, 8, 3, self.stem_stride), (1, 3, image_size, image_size)
        size = (image_size + 1) // 2
        for position, (c_in, c_out) in enumerate(zip([8, *CHANNELS[:-1]][: len(self.choices)], CHANNELS)):
            for choice, kernel in enumerate(KERNELS):
                yield position, choice, conv_block(c_in, c_out, kernel), (1, c_in, size, size)
            size = (size + 1) // 2


class ThreeDeclaredFourReturned(GoodSpace):
    name = "conformance-3-declared"
    out_channels = CHANNELS[:3]


class FourDeclaredThreeReturned(GoodSpace):
    name = "conformance-3-returned"
    maps = 3


class ThreeMaps(GoodSpace):
    """Three consistent feature maps: fine for classification, not for detection."""

    name = "conformance-3-maps"
    choices = (2, 2, 2)
    maps = 3
    out_channels = CHANNELS[:3]

    def __init__(self) -> None:
        self.named = {"all-3x3": (0, 0, 0)}


class WrongStrides(GoodSpace):
    name = "conformance-strides"
    stem_stride = 1


class NoWeightCopy(GoodSpace):
    name = "conformance-no-copy"

    def extract_network(self, supernet, arch):
        return self.build_network(arch)


class NoBufferCopy(GoodSpace):
    name = "conformance-no-buffers"

    def extract_network(self, supernet, arch):
        network = super().extract_network(supernet, arch)
        for layer in network.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.reset_running_stats()
        return network


class NoNamed(GoodSpace):
    name = "conformance-no-named"

    def __init__(self) -> None:  # forgets self.named
        pass


class StemlessCostParts(GoodSpace):
    name = "conformance-stemless-cost"

    def cost_parts(self, image_size: int):
        yield from list(super().cost_parts(image_size))[1:]


@pytest.mark.parametrize(
    "space, detection",
    [(GoodSpace(), True), (GoodSpace(), False), (ThreeMaps(), False)],
    ids=["detection", "classification", "3-maps-classification"],
)
def test_a_good_space_passes(space, detection):
    check_space(space, detection=detection)


def test_the_built_in_small_space_passes():
    check_space(registry.create("space", "shufflenet-small"))


def test_the_built_in_large_space_passes():
    check_space(registry.create("space", "shufflenet-large"), samples=1)


@pytest.mark.parametrize(
    "space, detection, message",
    [
        (
            ThreeDeclaredFourReturned(),
            True,
            "space 'conformance-3-declared': the supernet returns 4 feature maps but "
            "out_channels lists 3; out_channels needs one channel count per feature map",
        ),
        (
            FourDeclaredThreeReturned(),
            True,
            "space 'conformance-3-returned': the supernet returns 3 feature maps but out_channels lists 4",
        ),
        (FourDeclaredThreeReturned(), False, "the supernet returns 3 feature maps but out_channels lists 4"),
        (
            ThreeMaps(),
            True,
            "space 'conformance-3-maps' has 3 feature maps; detection tasks need 4, at strides 4, 8, 16 and 32",
        ),
        (
            WrongStrides(),
            True,
            "space 'conformance-strides': feature map 0 of the supernet is 32x32 for a 64x64 input, "
            "not stride 4 (16x16); detection needs strides 4, 8, 16, 32",
        ),
        (
            NoWeightCopy(),
            True,
            "space 'conformance-no-copy': extract_network(supernet, 1,1,0,1) computes other outputs "
            "than the supernet's path",
        ),
        (
            NoBufferCopy(),
            True,
            "extract_network(supernet, 1,1,0,1) computes other outputs than the supernet's path (feature map 0 differs",
        ),
        (NoNamed(), True, "space 'conformance-no-named' has no named; set named = {}"),
        # the stem's 8 * 32 * 32 * 3 * 9 = 221,184 multiply-accumulates are missing from the table
        (
            StemlessCostParts(),
            True,
            "space 'conformance-stemless-cost': cost_parts gives 1,1,0,1 892,928 FLOPs at "
            "64px but a full trace of build_network gives 1,114,112; cost_parts must yield every "
            "module",
        ),
    ],
    ids=[
        "3-declared-4-returned",
        "4-declared-3-returned",
        "4-declared-3-returned-cls",
        "3-maps-detection",
        "strides",
        "no-weight-copy",
        "no-buffer-copy",
        "no-named",
        "cost-parts",
    ],
)
def test_a_broken_space_gets_one_line_naming_it(space, detection, message):
    with pytest.raises(NasEngineError) as excinfo:
        check_space(space, detection=detection)
    assert message in one_line(excinfo)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"choices": [2, 2, 2, 2]}, "choices must be a non-empty tuple of ints >= 1"),
        ({"choices": (2, 0, 2, 2)}, "choices must be a non-empty tuple of ints >= 1"),
        ({"out_channels": []}, "out_channels must be a non-empty list of positive ints"),
        ({"named": {"odd": (0, 2, 0, 0)}}, "named architecture 'odd' = (0, 2, 0, 0) does not fit choices (2, 2, 2, 2)"),
        ({"named": [(0, 0, 0, 0)]}, "named must be a dict of architectures by name, not a list"),
        ({"baseline_name": "gone"}, "baseline_name 'gone' is not in named"),
        ({"choice_names": ("3x3",)}, "choice_names must name every choice index (at least 2 strings)"),
        ({"repeats": (2, 1)}, "repeats must be the searchable blocks of each stage, summing to the 4 positions"),
    ],
    ids=["list-choices", "zero-choices", "no-maps", "bad-named", "named-list", "baseline", "choice-names", "repeats"],
)
def test_bad_space_attributes_are_one_line_errors(change, message):
    space = GoodSpace()
    for key, value in change.items():
        setattr(space, key, value)
    with pytest.raises(NasEngineError) as excinfo:
        check_space(space)
    assert one_line(excinfo).startswith("space 'conformance-good'") and message in str(excinfo.value)


def test_a_space_without_a_name_is_told_to_set_one():
    class Nameless(GoodSpace):
        name = ""

    with pytest.raises(NasEngineError, match="space class Nameless has no name; set the class attribute name"):
        check_space(Nameless())


def test_the_checks_leave_the_global_random_generators_alone():
    state = torch.get_rng_state()
    check_space(GoodSpace(), samples=1)
    CostTable.build(GoodSpace(), 32)
    assert torch.equal(state, torch.get_rng_state())


# --- strategies ----------------------------------------------------------------------------------
class ToyStrategy(Strategy):
    """Two random candidates per ask, legal and new, three asks."""

    name = "toy"

    def __init__(self, choices, constraint, seed, *, asks: int = 3):
        super().__init__(choices, constraint, seed)
        self.rng = self.make_rng(seed)
        self.asks, self.seen = asks, set()
        self.budget = 2 * asks

    def make_rng(self, seed: int) -> random.Random:
        return random.Random(seed)

    @property
    def finished(self) -> bool:
        return self.asks == 0

    def draw(self) -> Arch:
        while True:
            arch = tuple(self.rng.randrange(n) for n in self.choices)
            if arch not in self.seen and self.constraint(arch):
                return arch

    def ask(self) -> list[Arch]:
        self.asks -= 1
        batch = []
        for _ in range(2):
            batch.append(self.draw())
            self.seen.add(batch[-1])
        return batch

    def tell(self, results) -> None:
        pass


class Repeating(ToyStrategy):
    name = "repeating"

    def ask(self) -> list[Arch]:
        return [(0, 0, 0, 0)] if self.asks > 1 else super().ask()


class Unconstrained(ToyStrategy):
    name = "unconstrained"

    def draw(self) -> Arch:
        return tuple(n - 1 for n in self.choices)  # the dearest, which the check's constraint refuses


class NotReplaying(ToyStrategy):
    name = "not-replaying"

    def make_rng(self, seed: int) -> random.Random:
        return random.Random()  # unseeded


class IgnoresSeed(ToyStrategy):
    name = "ignores-seed"

    def make_rng(self, seed: int) -> random.Random:
        return random.Random(42)


class Enumerates(IgnoresSeed):
    name = "enumerates"
    seeded = False  # says it draws nothing at random: two seeds may give one search


class GivesUp(ToyStrategy):
    name = "gives-up"

    def ask(self) -> list[Arch]:
        raise ConstraintUnsatisfiable("no architecture satisfies the FLOPs constraint")


class StuckEmpty(ToyStrategy):
    name = "stuck"

    def ask(self) -> list[Arch]:
        return []


@pytest.mark.parametrize(
    "name, options", [("evolution", {}), ("random", {}), ("evolution", {"population": 4, "top_k": 2, "generations": 3})]
)
def test_the_built_in_strategies_pass(name, options):
    check_strategy(registry.get("strategy", name), options=options)
    check_strategy(registry.get("strategy", name), choices=(4,) * 20, options={**options, "generations": 2})


def test_a_good_strategy_passes():
    check_strategy(ToyStrategy)
    check_strategy(Enumerates)


@pytest.mark.parametrize(
    "cls, message",
    [
        (
            Repeating,
            "strategy 'repeating' asked for 0,0,0,0 twice; a strategy must never propose an architecture it "
            "proposed before",
        ),
        (
            Unconstrained,
            "strategy 'unconstrained' asked for 2,2,2,2, which breaks the check's constraint; a strategy "
            "must only propose archs for which constraint(arch) is True",
        ),
        (
            NotReplaying,
            "strategy 'not-replaying' does not replay: a second instance with seed 0, told the same scores, asked for",
        ),
        (
            GivesUp,
            "strategy 'gives-up' raised ConstraintUnsatisfiable (no architecture satisfies the FLOPs constraint) "
            "although 61 legal architectures were never asked",
        ),
        (StuckEmpty, "strategy 'stuck' asked for no candidates but is not finished"),
        (IgnoresSeed, "strategy 'ignores-seed' ignores its seed: seeds 0 and 1 asked the same 6 candidates"),
    ],
    ids=["repeats", "breaks-constraint", "no-replay", "gives-up", "stuck", "ignores-seed"],
)
def test_a_broken_strategy_gets_one_line_naming_it(cls, message):
    with pytest.raises(NasEngineError) as excinfo:
        check_strategy(cls)
    assert message in one_line(excinfo)


@pytest.mark.parametrize(
    "asked, message",
    [
        (
            "dearest",
            "strategy 'bad-hill' asked for 3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3, which breaks the limits "
            "flops ≤ 300.0 M MACs; a strategy must only propose archs for which constraint(arch) is True",
        ),
        ("twice", "strategy 'bad-hill' asked for 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0 twice"),
        ("short", "strategy 'bad-hill' asked for 0,0,0, 3 positions where the space has 20"),
        (
            "range",
            "strategy 'bad-hill' asked for 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,4, whose choice 4 at position 19 "
            "is outside 0..3",
        ),
    ],
    ids=list(("dearest", "twice", "short", "range")),
)
def test_run_search_refuses_what_a_strategy_must_not_ask(asked, message, tmp_path, monkeypatch):
    batches = {
        "dearest": [(3,) * 20],
        "twice": [(0,) * 20, (0,) * 20],
        "short": [(0, 0, 0)],
        "range": [(0,) * 19 + (4,)],
    }

    class BadHill(ToyStrategy):
        name = "bad-hill"

        def ask(self):
            return batches[asked]

    real_get = registry.get
    monkeypatch.setattr(registry, "get", lambda kind, name: BadHill if name == "bad-hill" else real_get(kind, name))
    space = registry.create("space", "shufflenet-small")
    task = SimpleNamespace(loader=lambda *args, **kwargs: [])  # never reached: the asks are refused first
    search = SearchConfig(strategy="bad-hill", flops_max=300e6)
    with pytest.raises(NasEngineError) as excinfo:
        limits = run_limits(space, search, input_size=64)
        run_search(space, task, supernet=None, model=None, search=search, out_dir=tmp_path, limits=limits, seed=0)
    assert message in one_line(excinfo)
    assert not (tmp_path / "history.jsonl").exists() and not (tmp_path / "best.json").exists()


# --- tasks ---------------------------------------------------------------------------------------
class ToyTask(Task):
    """Random 32-px images of three classes; a linear head on the last feature map."""

    name = "conformance-toy"
    class_names = ["a", "b", "c"]

    def __init__(self, *, size: int = 6):
        self.size = size

    def options(self):
        return {"size": self.size}

    def build_model(self, backbone, out_channels):
        return nn.Sequential(Features(backbone), nn.Linear(out_channels[-1], len(self.class_names)))

    def dataset(self, split, *, train):
        generator = torch.Generator().manual_seed(len(split))
        return TensorDataset(
            torch.rand(self.size, 3, 32, 32, generator=generator), torch.randint(3, (self.size,), generator=generator)
        )

    def loss(self, model, batch):
        images, labels = batch
        return F.cross_entropy(model(images), labels)

    @torch.no_grad()
    def evaluate(self, model, loader):
        was_training = model.training
        model.eval()
        hits = seen = 0
        for images, labels in loader:
            hits += int((model(images).argmax(1) == labels).sum())
            seen += len(labels)
        model.train(was_training)
        return {"top1": 100.0 * hits / seen, "score": 100.0 * hits / seen}


class Features(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, images):
        return self.backbone(images)[-1].mean(dim=(2, 3))


class DictBatches(ToyTask):
    def collate(self, batch):
        images, labels = torch.utils.data.default_collate(batch)
        return {"images": images, "labels": labels}

    def loss(self, model, batch):
        return super().loss(model, (batch["images"], batch["labels"]))


class DetachedLoss(ToyTask):
    def loss(self, model, batch):
        return super().loss(model, batch).detach()


class NoScore(ToyTask):
    def evaluate(self, model, loader):
        return {"top1": super().evaluate(model, loader)["top1"]}


class LeavesEvalMode(ToyTask):
    def evaluate(self, model, loader):
        metrics = super().evaluate(model, loader)
        model.eval()
        return metrics


class WrongOptions(ToyTask):
    def options(self):
        return {"size": self.size, "colour": "red"}


def test_a_good_task_passes():
    check_task(ToyTask())


def test_the_built_in_detection_task_passes():
    check_task(registry.create("task", "coco-fpn", **TINY_COCO))


def test_the_built_in_classification_task_passes_on_the_small_space():
    task = registry.create("task", "fashion-mnist", search_size=4, calib_size=2, test_size=4, batch_size=2)
    space = registry.create("space", "shufflenet-small")
    check_task(task, backbone=space.build_network(space.named[space.baseline_name]), out_channels=space.out_channels)


@pytest.mark.parametrize(
    "task, message",
    [
        (
            DictBatches(),
            "task 'conformance-toy': a batch is a dict, not (images, targets); collate must return the images first",
        ),
        (DetachedLoss(), "task 'conformance-toy': loss(model, batch) has no gradient"),
        (NoScore(), "task 'conformance-toy': evaluate returned a dict ({'top1':"),
        (LeavesEvalMode(), "task 'conformance-toy': evaluate left the model in eval mode"),
        (WrongOptions(size=4), "task 'conformance-toy': WrongOptions(**options()) fails (TypeError: "),
    ],
    ids=["dict-batch", "detached-loss", "no-score", "eval-mode", "options"],
)
def test_a_broken_task_gets_one_line_naming_it(task, message):
    with pytest.raises(NasEngineError) as excinfo:
        check_task(task)
    assert message in one_line(excinfo)


# --- the engine and the command line -------------------------------------------------------------
def test_a_run_on_a_broken_space_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    from nasengine.protocol.engine import Run
    from nasengine.settings import config as configuration

    real_get = registry.get
    monkeypatch.setattr(
        registry,
        "get",
        lambda kind, name: FourDeclaredThreeReturned if name == "conformance-3-returned" else real_get(kind, name),
    )
    config = configuration.resolve(
        "smoke", overrides={"space": "conformance-3-returned", "task_options": {"search_size": 4, "calib_size": 2}}
    )
    with pytest.raises(NasEngineError) as excinfo:
        Run.create(tmp_path / "run", config)
    assert "space 'conformance-3-returned': the supernet returns 3 feature maps but out_channels lists 4" in one_line(
        excinfo
    )
    assert not (tmp_path / "run").exists()


class RepeatsInARun(ToyStrategy):
    """Asks the all-zeros architecture (legal under any constraint the check uses) in every batch."""

    name = "conformance-repeats"

    def ask(self) -> list[Arch]:
        self.asks -= 1
        return [tuple(0 for _ in self.choices), self.draw()]


class RunnableTask(ToyTask):
    """A ToyTask whose defaults are a smoke run's sizes (a preset gives options only to the plugins it names)."""

    name = "conformance-run-task"

    def __init__(self, *, search_size: int = 6, calib_size: int = 4, test_size: int = 6):
        super().__init__(size=search_size)
        self.sizes = {"search_size": search_size, "calib_size": calib_size, "test_size": test_size}

    def options(self):
        return dict(self.sizes)


class DetachedLossInARun(RunnableTask):
    name = "conformance-detached"

    def loss(self, model, batch):
        return super().loss(model, batch).detach()


class NoScoreInARun(RunnableTask):
    name = "conformance-no-score"

    def evaluate(self, model, loader):
        return {"top1": super().evaluate(model, loader)["top1"]}


@pytest.mark.parametrize(
    "plugin, overrides, message",
    [
        (
            RepeatsInARun,
            {"search": {"strategy": "conformance-repeats"}},
            "strategy 'conformance-repeats' asked for 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0 twice; a strategy "
            "must never propose an architecture it proposed before",
        ),
        (
            DetachedLossInARun,
            {"pretrain_task": "conformance-detached"},
            "task 'conformance-detached': loss(model, batch) has no gradient",
        ),
        (
            NoScoreInARun,
            {"pretrain_task": "conformance-no-score"},
            "task 'conformance-no-score': evaluate returned a dict ({'top1':",
        ),
    ],
    ids=["strategy-repeats", "task-detached-loss", "task-no-score"],
)
def test_a_run_on_a_broken_strategy_or_task_is_refused_before_anything_is_written(
    plugin, overrides, message, tmp_path, monkeypatch
):
    from nasengine.protocol.engine import Run
    from nasengine.settings import config as configuration

    real_get = registry.get
    monkeypatch.setattr(registry, "get", lambda kind, name: plugin if name == plugin.name else real_get(kind, name))
    config = configuration.resolve("smoke", overrides=overrides)
    with pytest.raises(NasEngineError) as excinfo:
        Run.create(tmp_path / "run", config)
    assert message in one_line(excinfo)
    assert not (tmp_path / "run").exists()


def test_nasengine_check_passes_the_built_in_space_and_strategy():
    result = CliRunner().invoke(
        cli, ["check", "--space", "shufflenet-small", "--strategy", "evolution"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("✓ space shufflenet-small: ") and "strides 4/8/16/32" in lines[0]
    assert lines[1].startswith("✓ strategy evolution: ")


def test_nasengine_check_names_the_broken_plugin(monkeypatch):
    real_get = registry.get
    monkeypatch.setattr(registry, "get", lambda kind, name: Repeating if name == "repeating" else real_get(kind, name))
    result = CliRunner().invoke(cli, ["check", "--strategy", "repeating"])
    assert result.exit_code != 0 and isinstance(result.exception, NasEngineError)
    assert "strategy 'repeating' asked for 0,0,0,0 twice" in str(result.exception)
    result = CliRunner().invoke(cli, ["check"])
    assert "nothing to check" in str(result.exception)


# --- the FLOPs cache -----------------------------------------------------------------------------
HELPER_BLOCKS = """
from torch import nn


def block(c_in, c_out, kernel):
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, 2, kernel // 2, bias=False), nn.BatchNorm2d(c_out))
"""
HELPER_SPACE = '''
from torch import nn

from nasengine.interfaces import Space

from .blocks import block


class HelperSpace(Space):
    """Blocks come from a helper module, not from this file."""

    name = "conformance-helper"
    choices = (2, 2)
    out_channels = [8, 16]
    named = {}

    def build_network(self, arch):
        return nn.Sequential(block(3, 8, (3, 5)[arch[0]]), block(8, 16, (3, 5)[arch[1]]))

    def build_supernet(self):
        raise NotImplementedError

    def extract_network(self, supernet, arch):
        raise NotImplementedError

    def cost_parts(self, image_size):
        size = (image_size + 1) // 2
        for choice, kernel in enumerate((3, 5)):
            yield 0, choice, block(3, 8, kernel), (1, 3, image_size, image_size)
            yield 1, choice, block(8, 16, kernel), (1, 8, size, size)
'''


def load_helper_space(root: Path) -> Space:
    for name in [n for n in sys.modules if n.startswith("conformance_helper")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    return importlib.import_module("conformance_helper.space").HelperSpace()


def test_a_changed_helper_module_rebuilds_the_table(tmp_path, monkeypatch):
    monkeypatch.setenv("NASENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(flops, "_tables", {})
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    package = tmp_path / "src" / "conformance_helper"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "blocks.py").write_text(HELPER_BLOCKS)
    (package / "space.py").write_text(HELPER_SPACE)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    try:
        space = load_helper_space(tmp_path)
        assert set(flops.space_modules(type(space))) == {
            "conformance_helper",
            "conformance_helper.space",
            "conformance_helper.blocks",
        }
        before = flops.table_path(space, 16)
        assert cost_of(space, (1, 1), 16).flops == trace_flops(space.build_network((1, 1)), 16)

        wider = HELPER_BLOCKS.replace(
            "nn.Conv2d(c_in, c_out, kernel, 2, kernel // 2, bias=False)",
            "nn.Conv2d(c_in, c_out, kernel, 2, kernel // 2, bias=False), nn.Conv2d(c_out, c_out, 1)",
        )
        (package / "blocks.py").write_text(wider)  # only the helper changes; space.py is the same file
        space = load_helper_space(tmp_path)
        flops._tables.clear()
        assert flops.table_path(space, 16) != before
        network = space.build_network((1, 1))
        assert cost_of(space, (1, 1), 16).flops == trace_flops(network, 16) and cost_of(
            space, (1, 1)
        ).params == count_params(network)
    finally:
        for name in [n for n in sys.modules if n.startswith("conformance_helper")]:
            del sys.modules[name]


def test_a_stale_table_on_disk_is_caught_by_its_trace_check_and_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("NASENGINE_CACHE", str(tmp_path))
    monkeypatch.setattr(flops, "_tables", {})
    space = GoodSpace()
    right = cost_table(space, 32).to_json()
    path = flops.table_path(space, 32)
    saved = json.loads(path.read_text())
    saved["fixed"]["flops"] += 1000  # same key, wrong numbers: as if a dynamic import had changed
    path.write_text(json.dumps(saved))
    flops._tables.clear()
    assert cost_table(space, 32).to_json() == right
    assert json.loads(path.read_text())["fixed"] == right["fixed"]  # and the file is fixed

    flops._tables.clear()
    traced = []
    monkeypatch.setattr(flops, "trace_flops", lambda module, size: traced.append(size) or trace_flops(module, size))
    assert cost_table(space, 32).to_json() == right  # a good table is read back after one full trace
    assert traced == [32]


@pytest.mark.parametrize(
    "command", [["space", "conformance-no-named"], ["flops", "--space", "conformance-no-named", "--arch", "0,0,0,0"]]
)
def test_space_and_flops_commands_refuse_a_space_without_named_in_one_line(command, monkeypatch):
    real_get = registry.get
    monkeypatch.setattr(registry, "get", lambda kind, name: NoNamed if name == NoNamed.name else real_get(kind, name))
    with pytest.raises(NasEngineError, match="space 'conformance-no-named' has no named; set named = {}"):
        cli.main(command, standalone_mode=False)
