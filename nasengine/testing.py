"""Conformance checks for plugins: ``check_space``, ``check_task``, ``check_strategy`` and ``check_constraint``.

A plugin author runs them in one line in their own tests::

    from nasengine.testing import check_space, check_strategy, check_task

    def test_my_plugins_keep_the_rules():
        check_space(MySpace())
        check_strategy(MyStrategy, options={"population": 4})
        check_task(MyTask(search_size=8))
        check_constraint(MyConstraint(), MySpace())

``nasengine check --space S --task T --strategy G --constraint C`` runs them on registered plugins, and the engine runs
``check_space`` (cheap settings) on a run's space before any training. Each check raises ``NasEngineError``
with one line naming the plugin and what to fix at the first rule broken, and returns None otherwise. The
rules are those written on the classes of :mod:`nasengine.interfaces`. Every check runs on the CPU, leaves
the global random generators as it found them and draws its own randomness from fixed seeds.
"""

from __future__ import annotations

import itertools
import math
import numbers
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from nasengine import console
from nasengine.arch import format_arch
from nasengine.errors import ConstraintUnsatisfiable, NasEngineError
from nasengine.interfaces import Arch, Constraint, Space, Strategy, Task, implements
from nasengine.strategy_base import BatchStrategy

__all__ = [
    "STRIDES",
    "TinyBackbone",
    "check_constraint",
    "check_space",
    "check_space_attributes",
    "check_strategy",
    "check_task",
    "fake_constraint",
    "fake_score",
    "sample_archs",
]

STRIDES = (4, 8, 16, 32)
"""Strides of the four feature maps a detection backbone returns (C2–C5)."""

TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}
"""How close the supernet's and the extracted network's outputs must be."""

REQUIRED_SPLITS = ("train", "search", "test", "calib")


# --- spaces --------------------------------------------------------------------------------------
def check_space(
    space: Space, *, detection: bool = True, samples: int = 3, image_size: int = 64, flops_image_size: int | None = None
) -> None:
    """Check ``space`` against the rules of :class:`nasengine.interfaces.Space`.

    Its attributes (``name``, ``choices``, ``out_channels``, ``named``, ``baseline_name``) and ``options()``;
    then, on ``samples`` seeded random architectures and a random ``image_size`` input: the supernet's
    active path and ``extract_network(supernet, arch)`` give the same outputs (eval mode, BN statistics and
    affine weights randomised first so that uncopied ones show); ``build_network(arch)`` has the extracted
    network's parameter and buffer names and shapes; both return one feature map per ``out_channels`` entry
    with those channels — with ``detection``, four at strides 4, 8, 16, 32; and when the space implements
    ``cost_parts``, its FLOPs and parameters (at ``flops_image_size``, default ``image_size``) equal a full
    fvcore trace of ``build_network(arch)``.
    """
    who = _space_label(space)
    _check_space_attributes(space, who)
    _check_options(space, who)
    with _private_random():
        supernet = _call(who, "build_supernet()", space.build_supernet)
        if not callable(getattr(supernet, "activate", None)) or not isinstance(supernet, nn.Module):
            raise NasEngineError(
                f"{who}: build_supernet() returned a {type(supernet).__name__}; return a "
                "nasengine.interfaces.Supernet (an nn.Module with activate(arch))"
            )
        _randomise_norm_layers(supernet)
        supernet.eval()
        images = torch.randn(2, 3, image_size, image_size)
        for arch in sample_archs(space.choices, samples):
            network = _check_path(space, who, supernet, arch, images, detection)
            if implements(space, "cost_parts"):
                _check_cost(space, who, arch, network, flops_image_size or image_size)


def _space_label(space: Any) -> str:
    name = getattr(space, "name", None)
    if not isinstance(name, str) or not name:
        raise NasEngineError(
            f"space class {type(space).__name__} has no name; set the class attribute "
            'name = "my-space" (the name it is registered under)'
        )
    return f"space {name!r}"


def _check_space_attributes(space: Space, who: str) -> None:
    choices = getattr(space, "choices", None)
    if not isinstance(choices, tuple) or not choices or not all(_is_int(n) and n >= 1 for n in choices):
        raise NasEngineError(
            f"{who}: choices must be a non-empty tuple of ints >= 1 (the options of each "
            f"searchable position), not {choices!r}"
        )
    out_channels = getattr(space, "out_channels", None)
    if (
        not isinstance(out_channels, (list, tuple))
        or not out_channels
        or not all(_is_int(c) and c >= 1 for c in out_channels)
    ):
        raise NasEngineError(
            f"{who}: out_channels must be a non-empty list of positive ints (the channels of each "
            f"feature map the backbone returns), not {out_channels!r}"
        )
    if not hasattr(space, "named"):
        raise NasEngineError(
            f"{who} has no named; set named = {{}} (or a dict of architectures by name, e.g. the baseline's)"
        )
    if not isinstance(space.named, dict):
        raise NasEngineError(
            f"{who}: named must be a dict of architectures by name, not a {type(space.named).__name__}"
        )
    for arch_name, arch in space.named.items():
        if not _fits(arch, choices):
            raise NasEngineError(
                f"{who}: named architecture {arch_name!r} = {arch!r} does not fit choices "
                f"{choices}; give one index per position, 0 <= arch[i] < choices[i]"
            )
    baseline = getattr(space, "baseline_name", None)
    if baseline is not None and baseline not in space.named:
        raise NasEngineError(
            f"{who}: baseline_name {baseline!r} is not in named; add it to named or set baseline_name = None"
        )
    names = getattr(space, "choice_names", None)
    if names is not None and (
        not isinstance(names, (tuple, list)) or not all(isinstance(n, str) for n in names) or len(names) < max(choices)
    ):
        raise NasEngineError(
            f"{who}: choice_names must name every choice index (at least {max(choices)} strings), not {names!r}; "
            "or leave it None"
        )
    repeats = getattr(space, "repeats", None)
    if repeats is not None and (
        not isinstance(repeats, (tuple, list))
        or not all(_is_int(r) and r >= 1 for r in repeats)
        or sum(repeats) != len(choices)
    ):
        raise NasEngineError(
            f"{who}: repeats must be the searchable blocks of each stage, summing to the {len(choices)} positions "
            f"of choices, not {repeats!r}; or leave it None"
        )


def check_space_attributes(space: Space) -> None:
    """The cheap part of :func:`check_space`: name, ``choices``, ``out_channels``, ``named`` and
    ``baseline_name`` are what the engine expects (no network is built)."""
    _check_space_attributes(space, _space_label(space))


def _check_options(plugin: Space | Task, who: str) -> None:
    """``options()`` is a dict, and ``type(plugin)(**options)`` rebuilds a plugin with the same options."""
    options = _call(who, "options()", plugin.options)
    if not isinstance(options, dict) or not all(isinstance(key, str) for key in options):
        raise NasEngineError(
            f"{who}: options() must return a dict of the constructor's keyword arguments, not {options!r}"
        )
    cls = type(plugin).__name__
    try:
        rebuilt = type(plugin)(**options)
    except TypeError as exc:
        raise NasEngineError(
            f"{who}: {cls}(**options()) fails ({_one_line(exc)}); options() must return exactly "
            "the constructor's keyword arguments"
        ) from exc
    if rebuilt.options() != options:
        raise NasEngineError(
            f"{who}: {cls}(**options()) has options {rebuilt.options()!r}, not "
            f"{options!r}; options() must return exactly the keyword arguments that rebuild it"
        )


def sample_archs(choices: Sequence[int], count: int, seed: int = 0) -> list[Arch]:
    """``count`` seeded random architectures (distinct while the space has that many)."""
    rng = random.Random(seed)
    archs: list[Arch] = []
    for _ in range(100 * count):
        arch = tuple(rng.randrange(n) for n in choices)
        if arch not in archs:
            archs.append(arch)
        if len(archs) == count:
            break
    return archs


def _randomise_norm_layers(module: nn.Module) -> None:
    """Random BN running statistics and affine weights: an ``extract_network`` that skips them shows."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.modules.batchnorm._NormBase):
                if layer.running_mean is not None:
                    layer.running_mean.normal_(0, 0.1)
                    layer.running_var.uniform_(0.5, 1.5)  # type: ignore[union-attr]
                if layer.affine:
                    layer.weight.uniform_(0.5, 1.5)
                    layer.bias.normal_(0, 0.1)


def _check_path(
    space: Space, who: str, supernet: nn.Module, arch: Arch, images: torch.Tensor, detection: bool
) -> nn.Module:
    """The supernet's path ``arch`` against its extracted and its built network; returns the built one."""
    text = format_arch(arch)
    _call(who, f"supernet.activate({text})", supernet.activate, arch)  # type: ignore[arg-type]
    with torch.no_grad():
        expected = _call(who, f"the supernet's forward on {text}", supernet, images)
    _check_feature_maps(who, "the supernet", expected, space.out_channels, images, detection)
    extracted = _call(who, f"extract_network(supernet, {text})", space.extract_network, supernet, arch)
    extracted.eval()
    with torch.no_grad():
        got = _call(who, f"the forward of extract_network(supernet, {text})", extracted, images)
    _check_feature_maps(who, "extract_network(...)", got, space.out_channels, images, detection)
    for index, (want, have) in enumerate(zip(expected, got)):
        if want.shape != have.shape or not torch.allclose(have, want, **TOLERANCE):  # type: ignore[arg-type]
            gap = (have - want).abs().max().item() if want.shape == have.shape else math.inf
            raise NasEngineError(
                f"{who}: extract_network(supernet, {text}) computes other outputs than the supernet's path (feature "
                f"map {index} differs by up to {gap:.3g}); copy every weight and BN buffer of the path from the "
                "supernet"
            )
    network = _call(who, f"build_network({text})", space.build_network, arch)
    _check_same_weights(who, text, network, extracted)
    return network


def _check_feature_maps(
    who: str, source: str, maps: Any, out_channels: Sequence[int], images: torch.Tensor, detection: bool
) -> None:
    if not isinstance(maps, (list, tuple)) or not all(isinstance(m, torch.Tensor) for m in maps):
        raise NasEngineError(
            f"{who}: {source} returns a {type(maps).__name__}; forward must return a list with one "
            "feature map (a tensor) per out_channels entry"
        )
    if len(maps) != len(out_channels):
        raise NasEngineError(
            f"{who}: {source} returns {len(maps)} feature maps but out_channels lists "
            f"{len(out_channels)}; out_channels needs one channel count per feature map returned"
        )
    if detection and len(maps) != len(STRIDES):
        raise NasEngineError(
            f"{who} has {len(maps)} feature maps; detection tasks need 4, at strides 4, 8, 16 and 32 (C2–C5)"
        )
    for index, (feature, channels) in enumerate(zip(maps, out_channels)):
        if feature.ndim != 4 or feature.shape[0] != len(images):
            raise NasEngineError(
                f"{who}: feature map {index} of {source} has shape {tuple(feature.shape)} for "
                f"{len(images)} images; feature maps are (N, C, H, W)"
            )
        if feature.shape[1] != channels:
            raise NasEngineError(
                f"{who}: feature map {index} of {source} has {feature.shape[1]} channels but "
                f"out_channels[{index}] is {channels}; make out_channels match what forward returns"
            )
    if detection:
        _check_strides(who, source, maps, images.shape[-1])


def _check_strides(who: str, source: str, maps: Sequence[torch.Tensor], size: int) -> None:
    for index, (feature, stride) in enumerate(zip(maps, STRIDES)):
        allowed = {size // stride, -(-size // stride)}  # stride-2 layers may round up or down
        height, width = feature.shape[-2:]
        if height not in allowed or width not in allowed:
            raise NasEngineError(
                f"{who}: feature map {index} of {source} is {height}x{width} for a {size}x{size} input, not stride "
                f"{stride} ({size // stride}x{size // stride}); detection needs strides 4, 8, 16, 32"
            )


def _check_same_weights(who: str, text: str, built: nn.Module, extracted: nn.Module) -> None:
    want = {key: tuple(value.shape) for key, value in built.state_dict().items()}
    have = {key: tuple(value.shape) for key, value in extracted.state_dict().items()}
    if want == have:
        return
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    reshaped = sorted(key for key in set(want) & set(have) if want[key] != have[key])
    detail = (
        f"{missing[0]!r} only in build_network"
        if missing
        else f"{extra[0]!r} only in extract_network"
        if extra
        else f"{reshaped[0]!r} is {want[reshaped[0]]} vs {have[reshaped[0]]}"
    )
    raise NasEngineError(
        f"{who}: build_network({text}) and extract_network(supernet, {text}) have different "
        f"weights ({detail}); extract_network must return build_network(arch) with the path's "
        "weights copied in"
    )


def _check_cost(space: Space, who: str, arch: Arch, network: nn.Module, image_size: int) -> None:
    from nasengine.flops import cost_of, count_params, trace_flops

    table = cost_of(space, arch, image_size)
    text = format_arch(arch)
    traced = {"FLOPs": trace_flops(network, image_size), "parameters": count_params(network)}
    for what, counted in (("FLOPs", table.flops), ("parameters", table.params)):
        if counted != traced[what]:
            raise NasEngineError(
                f"{who}: cost_parts gives {text} {counted:,} {what} at {image_size}px but a full trace of "
                f"build_network gives {traced[what]:,}; cost_parts must yield every module build_network runs, with "
                "the input shape it gets there"
            )


# --- strategies ----------------------------------------------------------------------------------
def fake_constraint(choices: Sequence[int]) -> Callable[[Arch], bool]:
    """The constraint ``check_strategy`` searches under: the dearest architectures break it (like a FLOPs
    limit) and so does a scattered fifth of the others."""
    cap = 0.75 * sum(n - 1 for n in choices)

    def legal(arch: Arch) -> bool:
        try:
            return sum(arch) <= cap and sum((i + 1) * int(c) for i, c in enumerate(arch)) % 5 != 1
        except (TypeError, ValueError):
            return False

    return legal


def fake_score(arch: Arch) -> float:
    """A deterministic score for ``check_strategy``, with ties and an occasional NaN, as real searches give."""
    value = sum((i + 1) * (c + 1) ** 2 for i, c in enumerate(arch)) % 17
    return math.nan if value == 5 else value / 16


def check_strategy(
    strategy_cls: type[Strategy],
    choices: Sequence[int] = (3, 3, 3, 3),
    options: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    budget: int = 10_000,
) -> None:
    """Check ``strategy_cls`` against the rules of :class:`nasengine.interfaces.Strategy`.

    Builds it as ``strategy_cls(choices=..., constraint=..., seed=seed, **options)`` under
    :func:`fake_constraint` and drives ask/tell like the engine, telling :func:`fake_score`: every asked
    architecture must be a tuple of ``len(choices)`` legal indices, satisfy the constraint and be new; an
    empty batch must finish it; it must finish within ``budget`` candidates and ask no more than its own
    ``budget`` says; ``ConstraintUnsatisfiable`` is an error while legal new architectures are left. A second
    instance with the same seed must then ask exactly the same sequence, and one with another seed
    (``seed + 1``) another sequence, unless the class says ``seeded = False`` (it draws nothing at random).
    A ``BatchStrategy`` is driven once more in a space of ``4**20`` architectures, where its own proposals
    must never run dry (a mutation that never changes anything would turn it into random search).
    """
    name = str(getattr(strategy_cls, "name", strategy_cls.__name__))
    choices = tuple(choices)
    if not choices or not all(_is_int(n) and n >= 1 for n in choices):
        raise NasEngineError(f"check_strategy: choices must be a non-empty sequence of ints >= 1, not {choices!r}")
    first, _ = _drive(strategy_cls, name, choices, dict(options or {}), seed, budget)
    second, _ = _drive(strategy_cls, name, choices, dict(options or {}), seed, budget)
    _check_replay(f"strategy {name!r}", seed, first, second)
    if getattr(strategy_cls, "seeded", True):
        other, _ = _drive(strategy_cls, name, choices, dict(options or {}), seed + 1, budget)
        if other == first:
            raise NasEngineError(
                f"strategy {name!r} ignores its seed: seeds {seed} and {seed + 1} asked the same "
                f"{sum(map(len, first))} candidates; draw from a random.Random(seed) of its own (or set the class "
                "attribute seeded = False if it draws nothing at random)"
            )
    if issubclass(strategy_cls, BatchStrategy):
        large = (4,) * 20
        _, strategy = _drive(strategy_cls, name, large, dict(options or {}), seed, budget)
        if isinstance(strategy, BatchStrategy) and strategy.random_fills:
            raise NasEngineError(
                f"strategy {name!r}: its own proposals ran dry in a space of 4**20 architectures, so "
                f"{strategy.random_fills} of {strategy.budget} candidates were drawn at random; check that its "
                "proposals (mutation, crossover, ...) make new architectures"
            )


def _drive(
    strategy_cls: type[Strategy], name: str, choices: Arch, options: dict[str, Any], seed: int, budget: int
) -> tuple[list[list[Arch]], Strategy]:
    """Ask and tell until the strategy is finished, its log lines silenced (the check says what is wrong);
    the batches it asked, each checked, and the strategy."""
    from nasengine.protocol.search import check_asked

    who = f"strategy {name!r}"
    constraint = fake_constraint(choices)
    strategy = _call(
        who,
        f"{strategy_cls.__name__}(choices, constraint, seed, **{options!r})",
        lambda: strategy_cls(choices=choices, constraint=constraint, seed=seed, **options),
    )
    asked: set[Arch] = set()
    batches: list[list[Arch]] = []
    while not strategy.finished:
        try:
            with console.silenced():
                candidates = strategy.ask()
        except ConstraintUnsatisfiable as exc:
            raise _unsatisfiable(who, exc, choices, constraint, asked) from None
        except NasEngineError as exc:
            raise NasEngineError(f"{who}: ask() failed: {_one_line(exc, with_type=False)}") from exc
        except Exception as exc:
            raise NasEngineError(f"{who}: ask() raised {_one_line(exc)}; fix the strategy") from exc
        batch = check_asked(name, candidates, choices, constraint, asked, "the check's constraint")
        asked.update(batch)
        batches.append(batch)
        _call(who, "tell(results)", strategy.tell, [(arch, fake_score(arch)) for arch in batch])
        if not batch and not strategy.finished:
            raise NasEngineError(
                f"{who} asked for no candidates but is not finished; finished must be True once an empty batch is told"
            )
        if len(asked) > budget:
            raise NasEngineError(
                f"{who} is not finished after {len(asked)} candidates (the check's budget is "
                f"{budget}); finished must turn True once the strategy's budget is spent"
            )
    declared = getattr(strategy, "budget", None)
    if declared is not None and len(asked) > declared:
        raise NasEngineError(
            f"{who} asked for {len(asked)} candidates but its budget says {declared}; budget is the "
            "total number of candidates it asks for"
        )
    return batches, strategy


ENUMERABLE = 100_000
"""Spaces up to this size are enumerated to count the legal architectures a strategy left unasked."""


def _unsatisfiable(
    who: str, exc: Exception, choices: Arch, constraint: Callable[[Arch], bool], asked: set[Arch]
) -> NasEngineError:
    if math.prod(choices) > ENUMERABLE:
        return NasEngineError(
            f"{who} raised ConstraintUnsatisfiable ({exc}) after {len(asked)} candidates, in a "
            f"space of {math.prod(choices):.3g} where most architectures are legal under the "
            "check's constraint; look further before giving up"
        )
    left = sum(1 for arch in itertools.product(*map(range, choices)) if arch not in asked and constraint(arch))
    if left:
        return NasEngineError(
            f"{who} raised ConstraintUnsatisfiable ({exc}) although {left} legal architectures "
            "were never asked; look further (e.g. enumerate a small space) before giving up"
        )
    return NasEngineError(
        f"{who} raised ConstraintUnsatisfiable ({exc}) once every legal architecture was asked; "
        "return a short (or empty) batch and become finished instead"
    )


def _check_replay(who: str, seed: int, first: list[list[Arch]], second: list[list[Arch]]) -> None:
    for index, (was, now) in enumerate(itertools.zip_longest(first, second, fillvalue=[]), start=1):  # type: ignore[var-annotated]
        if was == now:
            continue
        where = next((i for i, (a, b) in enumerate(zip(was, now)) if a != b), min(len(was), len(now)))
        if where < min(len(was), len(now)):
            what = f"asked for {format_arch(now[where])} where the first asked for {format_arch(was[where])}"
        else:
            what = f"asked {len(now)} candidates where the first asked {len(was)}"
        raise NasEngineError(
            f"{who} does not replay: a second instance with seed {seed}, told the same scores, {what} (ask {index}, "
            f"candidate {where + 1}); draw only from a random.Random(seed) of its own, never from the global random "
            "or torch generators"
        )


# --- tasks ---------------------------------------------------------------------------------------
class TinyBackbone(nn.Module):
    """A small backbone for checking tasks: four feature maps of 8, 16, 32, 64 channels at strides 4, 8, 16, 32."""

    out_channels = [8, 16, 32, 64]

    def __init__(self) -> None:
        super().__init__()
        widths = [3, 8, *self.out_channels]
        self.stem = _conv_bn_relu(widths[0], widths[1])
        self.stages = nn.ModuleList(_conv_bn_relu(widths[i + 1], widths[i + 2]) for i in range(4))

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x, features = self.stem(images), []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def check_task(
    task: Task,
    *,
    backbone: nn.Module | None = None,
    out_channels: Sequence[int] | None = None,
    images: int | None = None,
) -> None:
    """Check ``task`` against the rules of :class:`nasengine.interfaces.Task`.

    Its attributes and ``options()``; a batch of ``loader("search", train=False, batch_size=2)`` is
    ``(images, targets)`` with images first and countable; ``build_model(backbone, out_channels)`` plus
    ``loss`` in train mode give a finite scalar whose gradient reaches the backbone; ``evaluate`` on the
    search split returns a dict of floats with ``score`` and gives the model back in train mode. The
    backbone defaults to :class:`TinyBackbone`; a given one's ``out_channels`` default to its attribute of
    that name, else to the channels of its outputs on a 64-px image. The whole search split is evaluated,
    so give the task small options (e.g. ``search_size``), or pass ``images``: only the first ``images``
    of the search split are then evaluated (a ``torch.utils.data.Subset`` of the loader's dataset, as the
    engine's preflight does; a loader that is not a ``DataLoader`` is evaluated whole).
    """
    if images is not None and (not _is_int(images) or images < 1):
        raise NasEngineError(f"check_task: images must be an int >= 1 or None, not {images!r}")
    who = _task_label(task)
    _check_task_attributes(task, who)
    _check_options(task, who)
    with _private_random():
        batch = _first_batch(task, who)
        _check_batch(who, batch)
        if backbone is None:
            backbone, out_channels = TinyBackbone(), TinyBackbone.out_channels
        channels = list(
            out_channels
            or getattr(backbone, "out_channels", None)
            or _call(who, "the backbone's forward on a 64-px image", _channels_of, backbone)
        )
        model = _call(who, "build_model(backbone, out_channels)", task.build_model, backbone, channels)
        _check_loss(who, task, model, backbone, batch)
        _check_evaluate(who, task, model, images)


def _task_label(task: Any) -> str:
    name = getattr(task, "name", None)
    if not isinstance(name, str) or not name:
        raise NasEngineError(
            f"task class {type(task).__name__} has no name; set the class attribute "
            'name = "my-task" (the name it is registered under)'
        )
    return f"task {name!r}"


def _check_task_attributes(task: Task, who: str) -> None:
    if task.kind not in ("classification", "detection"):
        raise NasEngineError(f'{who}: kind must be "classification" or "detection", not {task.kind!r}')
    missing = [split for split in REQUIRED_SPLITS if split not in task.splits]
    if missing:
        raise NasEngineError(f"{who}: splits lacks {', '.join(missing)}; the engine uses train, search, test and calib")
    for attribute in ("base_lr", "base_batch_size", "batch_size"):
        value = getattr(task, attribute, None)
        if (
            not isinstance(value, numbers.Real)
            or isinstance(value, bool)
            or not value > 0  # type: ignore[operator]
            or (attribute != "base_lr" and not _is_int(value))
        ):
            kind = "a positive number" if attribute == "base_lr" else "a positive int"
            raise NasEngineError(f"{who}: {attribute} must be {kind}, not {value!r}")
    names = _call(who, "class_names", lambda: task.class_names)
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise NasEngineError(f"{who}: class_names must be a non-empty list of str, not {names!r}")


def _first_batch(task: Task, who: str) -> Any:
    loader = _call(
        who, 'loader("search", train=False, batch_size=2)', lambda: task.loader("search", train=False, batch_size=2)
    )
    batch = _call(who, "the first batch of the search split", lambda: next(iter(loader), None))
    if batch is None:
        raise NasEngineError(f"{who}: the search split is empty; give it images (e.g. a larger search_size)")
    return batch


def _check_batch(who: str, batch: Any) -> int:
    """The number of images in ``batch`` after checking it is ``(images, targets)``."""
    if not isinstance(batch, (tuple, list)) or not batch:
        raise NasEngineError(
            f"{who}: a batch is a {type(batch).__name__}, not (images, targets); collate must return "
            "the images first (the engine counts len(batch[0]))"
        )
    images = batch[0]
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        count = images.shape[0]
    elif (
        isinstance(images, (list, tuple))
        and images
        and all(isinstance(i, torch.Tensor) and i.ndim == 3 for i in images)
    ):
        count = len(images)
    else:
        raise NasEngineError(
            f"{who}: batch[0] is not the images (a (N, C, H, W) tensor or a list of (C, H, W) "
            "tensors); collate must return (images, targets), images first"
        )
    if not 1 <= count <= 2:
        raise NasEngineError(
            f"{who}: loader(batch_size=2) gave a batch of {count} images; pass batch_size on to the DataLoader"
        )
    if len(batch) > 1 and hasattr(batch[1], "__len__") and len(batch[1]) != count:
        raise NasEngineError(
            f"{who}: a batch holds {count} images but {len(batch[1])} targets; give one target per image"
        )
    return count


def _channels_of(backbone: nn.Module) -> list[int]:
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            return [feature.shape[1] for feature in backbone(torch.zeros(1, 3, 64, 64))]
    finally:
        backbone.train(was_training)


def _check_loss(who: str, task: Task, model: nn.Module, backbone: nn.Module, batch: Any) -> None:
    model.train()
    loss = _call(who, "loss(model, batch)", task.loss, model, batch)
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise NasEngineError(f"{who}: loss(model, batch) returned {_describe(loss)}; return a scalar tensor")
    if not torch.isfinite(loss):
        raise NasEngineError(f"{who}: loss(model, batch) is {loss.item()} on a fresh model; it must be finite")
    if not loss.requires_grad:
        raise NasEngineError(
            f"{who}: loss(model, batch) has no gradient (detached, or computed without "
            "gradients); return the tensor the optimiser back-propagates"
        )
    _call(who, "loss.backward()", loss.backward)
    if not any(p.grad is not None for p in backbone.parameters()):
        raise NasEngineError(
            f"{who}: the loss's gradient does not reach the backbone; build_model must run the backbone it is given"
        )
    model.zero_grad(set_to_none=True)


def _check_evaluate(who: str, task: Task, model: nn.Module, images: int | None = None) -> None:
    loader = task.loader("search", train=False, batch_size=2)
    if images is not None:
        loader = _first_images(loader, images)
    model.train()
    metrics = _call(who, "evaluate(model, loader)", task.evaluate, model, loader)
    if not isinstance(metrics, dict) or "score" not in metrics:
        raise NasEngineError(
            f"{who}: evaluate returned {_describe(metrics)}; return a dict of floats with a 'score' (higher is better)"
        )
    score = metrics["score"]
    if not isinstance(score, numbers.Real) or isinstance(score, bool):
        raise NasEngineError(f"{who}: evaluate's score is {_describe(score)}; make it a float (higher is better)")
    for key, value in metrics.items():
        try:
            float(value)
        except (TypeError, ValueError):
            raise NasEngineError(
                f"{who}: evaluate's metric {key!r} is {_describe(value)}; every metric must be a number"
            ) from None
    if not model.training:
        raise NasEngineError(f"{who}: evaluate left the model in eval mode; give it back in the mode it came in")


def _first_images(loader: Any, images: int) -> Any:
    """``loader`` over the first ``images`` samples of its dataset, with its batch size and collate function;
    ``loader`` itself when it is not a ``DataLoader`` or has no more samples than that."""
    if not isinstance(loader, torch.utils.data.DataLoader):
        return loader
    try:
        size = len(loader.dataset)  # type: ignore[arg-type]
    except TypeError:
        return loader
    if size <= images:
        return loader
    return torch.utils.data.DataLoader(
        torch.utils.data.Subset(loader.dataset, range(images)),
        batch_size=loader.batch_size,
        collate_fn=loader.collate_fn,
    )


# --- constraints ---------------------------------------------------------------------------------
def check_constraint(constraint: Constraint, space: Space, *, samples: int = 8, input_size: int = 64) -> None:
    """Check ``constraint`` against the rules of :class:`nasengine.interfaces.Constraint` on ``space``.

    ``name``, ``unit`` and ``description`` are strings, ``options()`` a dict that rebuilds it; ``prepare`` runs
    with a run folder (a temporary one); ``cost`` gives every architecture of ``samples`` (the space's named
    ones and random ones from a fixed seed) a finite number >= 0, the same on a second call and — after a
    fresh instance is prepared with the same folder, as a resumed run is — the same again; ``format`` gives
    a string; ``cost_range``, when implemented, bounds every cost; ``measure``, when implemented, gives the
    built network of an architecture a finite number >= 0.
    """
    import tempfile
    from pathlib import Path

    name = getattr(constraint, "name", None)
    who = f"constraint {name!r}" if isinstance(name, str) and name else f"constraint {type(constraint).__name__}"
    if not isinstance(constraint, Constraint):
        raise NasEngineError(f"{who} is {_describe(constraint)}, not a nasengine.interfaces.Constraint; subclass it")
    for attribute in ("name", "unit", "description"):
        value = getattr(constraint, attribute, None)
        if not isinstance(value, str) or (attribute == "name" and not value):
            raise NasEngineError(
                f"{who}: {attribute} must be a{' non-empty' if attribute == 'name' else ''} string, "
                f"not {_describe(value)}; set it on the class"
            )
    options = _call(who, "options()", constraint.options)
    if not isinstance(options, dict):
        raise NasEngineError(f"{who}: options() returned {_describe(options)}, not a dict of its keyword arguments")
    rebuilt = _call(who, f"{type(constraint).__name__}(**options())", lambda: type(constraint)(**options))
    if _call(who, "options() of the rebuilt constraint", rebuilt.options) != options:
        raise NasEngineError(f"{who}: type(c)(**c.options()) has other options; options() must return what rebuilds it")
    archs = [tuple(arch) for arch in space.named.values()][: samples // 2]
    archs += sample_archs(space.choices, samples - len(archs), seed=0)
    with tempfile.TemporaryDirectory() as folder, _private_random():
        _call(
            who,
            "prepare(space, input_size=..., folder=...)",
            lambda: constraint.prepare(space, input_size=input_size, folder=Path(folder)),
        )
        costs = [_cost(who, constraint, space, arch) for arch in archs]
        again = [_cost(who, constraint, space, arch) for arch in archs]
        resumed = type(constraint)(**options)
        _call(
            who,
            "prepare of a fresh instance on the same folder",
            lambda: resumed.prepare(space, input_size=input_size, folder=Path(folder)),
        )
        after = [_cost(who, resumed, space, arch) for arch in archs]
    for arch, first, second, third in zip(archs, costs, again, after):
        if not first == second == third:
            raise NasEngineError(
                f"{who}: cost of {format_arch(arch)} was {first}, then {second}, then {third} after a fresh instance "
                "was prepared on the same folder; a cost must be deterministic within a run (keep what is measured "
                "in the folder prepare gets, and read it back)"
            )
    text = _call(who, "format(cost)", constraint.format, costs[0])
    if not isinstance(text, str):
        raise NasEngineError(f"{who}: format() returned {_describe(text)}, not a string")
    if implements(constraint, "cost_range"):
        span = _call(who, "cost_range(space)", constraint.cost_range, space)
        if not (isinstance(span, tuple) and len(span) == 2 and all(_is_number(v) for v in span) and span[0] <= span[1]):
            raise NasEngineError(f"{who}: cost_range returned {_describe(span)}, not a (low, high) tuple of numbers")
        slack = 1e-9 * max(1.0, abs(span[1]))
        for arch, cost in zip(archs, costs):
            if not span[0] - slack <= cost <= span[1] + slack:
                raise NasEngineError(
                    f"{who}: cost of {format_arch(arch)} is {cost}, outside cost_range {span}; the range must bound "
                    "every architecture's cost"
                )
    if implements(constraint, "measure"):
        with _private_random():
            network = space.build_network(archs[0])
        measured = _call(who, "measure(space, arch, network)", constraint.measure, space, archs[0], network)
        if not _is_number(measured) or measured < 0:
            raise NasEngineError(f"{who}: measure returned {_describe(measured)}, not a finite number >= 0")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _cost(who: str, constraint: Constraint, space: Space, arch: Arch) -> float:
    value = _call(who, f"cost(space, {format_arch(arch)})", constraint.cost, space, arch)
    if not _is_number(value) or value < 0:
        raise NasEngineError(f"{who}: cost of {format_arch(arch)} is {_describe(value)}, not a finite number >= 0")
    return value


# --- shared --------------------------------------------------------------------------------------
@contextmanager
def _private_random() -> Iterator[None]:
    """Seeded torch randomness that leaves the global generator as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def _call(who: str, what: str, function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)``, with any exception turned into one line naming the plugin and the call."""
    try:
        return function(*args)
    except NasEngineError as exc:
        raise NasEngineError(f"{who}: {what} failed: {_one_line(exc, with_type=False)}") from exc
    except Exception as exc:
        raise NasEngineError(f"{who}: {what} raised {_one_line(exc)}; fix the plugin") from exc


def _one_line(exc: BaseException, with_type: bool = True, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if with_type else text


def _describe(value: Any) -> str:
    text = repr(value)
    return f"a {type(value).__name__} ({text[:60]}{'...' if len(text) > 60 else ''})"


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _fits(arch: Any, choices: Sequence[int]) -> bool:
    return (
        isinstance(arch, (list, tuple))
        and len(arch) == len(choices)
        and all(_is_int(c) and 0 <= c < n for c, n in zip(arch, choices))
    )
