"""The DetNAS ShuffleNetV2 search spaces: ``shufflenet-small`` (20 blocks, ~300M FLOPs) and
``shufflenet-large`` (40 blocks, ~1.3G, or ~3.8G with ``width="3.8G"``), their blocks, supernet and
standalone networks — one model family per file.

Every block has 4 choices: 0/1/2 a ShuffleNetV2 unit with a depthwise 3×3/5×5/7×7, 3 the Xception-like unit
(three depthwise 3×3 + 1×1 pairs). Layer order, channel counts and the even/odd channel split follow the
authors' reference implementation (DetNAS / SinglePathOneShot), so FLOPs match the paper's counts exactly.
The backbone returns the four stage outputs (strides 4, 8, 16, 32). A standalone network mirrors the
supernet's structure: its ``stages.{i}.{j}`` is the supernet's ``stages.{i}.{j}.choices.{c}``, so weights
copy as a plain state-dict mapping.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from nasengine.errors import NasEngineError
from nasengine.interfaces import Arch, Space, Supernet

KERNELS = (3, 5, 7, 3)
"""Depthwise kernel size of each choice (the Xception unit uses 3×3 throughout)."""


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel: int = 1,
    stride: int = 1,
    *,
    depthwise: bool = False,
    relu: bool = False,
) -> list[nn.Module]:
    """Conv (no bias) → BN (→ ReLU), as a list of layers to splice into an ``nn.Sequential``."""
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels, out_channels, kernel, stride, kernel // 2, groups=in_channels if depthwise else 1, bias=False
        ),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


def stem(out_channels: int) -> nn.Sequential:
    """3×3 conv stride 2 → BN → ReLU (no max-pool: the first searched block brings the stride to 4)."""
    return nn.Sequential(*conv_bn(3, out_channels, 3, 2, relu=True))


def shufflenet_branch(
    in_channels: int, mid_channels: int, out_channels: int, kernel: int, stride: int
) -> nn.Sequential:
    """1×1 → BN → ReLU → depthwise k×k → BN → 1×1 → BN → ReLU."""
    return nn.Sequential(
        *conv_bn(in_channels, mid_channels, relu=True),
        *conv_bn(mid_channels, mid_channels, kernel, stride, depthwise=True),
        *conv_bn(mid_channels, out_channels, relu=True),
    )


def xception_branch(in_channels: int, mid_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Three × [depthwise 3×3 → BN → 1×1 → BN → ReLU]; only the first depthwise conv is strided."""
    return nn.Sequential(
        *conv_bn(in_channels, in_channels, 3, stride, depthwise=True),
        *conv_bn(in_channels, mid_channels, relu=True),
        *conv_bn(mid_channels, mid_channels, 3, depthwise=True),
        *conv_bn(mid_channels, mid_channels, relu=True),
        *conv_bn(mid_channels, mid_channels, 3, depthwise=True),
        *conv_bn(mid_channels, out_channels, relu=True),
    )


class ShuffleBlock(nn.Module):
    """One searchable block: ``choice`` picks the right branch, ``stride`` 2 opens a stage.

    Stride 1: the input's even channels pass through unchanged, the odd ones go through the branch, and the
    two halves are concatenated. Stride 2: a left branch (depthwise k×k stride 2 → BN → 1×1 → BN → ReLU)
    keeps all ``in_channels`` and the right branch adds ``out_channels - in_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, choice: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if not 0 <= choice < len(KERNELS):
            raise ValueError(f"choice must be in 0..{len(KERNELS) - 1}, got {choice}")
        if stride == 1 and (in_channels != out_channels or in_channels % 2):
            raise ValueError(f"a stride-1 block needs equal, even channel counts, got {in_channels} → {out_channels}")
        if stride == 2 and out_channels <= in_channels:
            raise ValueError(f"a stride-2 block must widen its input, got {in_channels} → {out_channels}")
        self.stride = stride
        kernel = KERNELS[choice]
        mid_channels = out_channels // 2
        if stride == 2:
            branch_in, branch_out = in_channels, out_channels - in_channels
            self.left = nn.Sequential(
                *conv_bn(in_channels, in_channels, kernel, 2, depthwise=True),
                *conv_bn(in_channels, in_channels, relu=True),
            )
        else:
            branch_in = branch_out = out_channels // 2
            self.left = None
        if choice == 3:
            self.right = xception_branch(branch_in, mid_channels, branch_out, stride)
        else:
            self.right = shufflenet_branch(branch_in, mid_channels, branch_out, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.left is None:
            # the channel shuffle of the previous block's concat, fused with this block's split
            return torch.cat((x[:, 0::2], self.right(x[:, 1::2])), dim=1)
        return torch.cat((self.left(x), self.right(x)), dim=1)


class ChoiceBlock(nn.Module):
    """Every choice of one position; the supernet calls the chosen one."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.choices = nn.ModuleList(ShuffleBlock(in_channels, out_channels, stride, c) for c in range(len(KERNELS)))

    def forward(self, x: torch.Tensor, choice: int) -> torch.Tensor:
        return self.choices[choice](x)


class ShuffleNetBackbone(nn.Module):
    """A standalone path: stem, then four stages of fixed blocks; returns the four stage outputs."""

    def __init__(self, stem_channels: int, stage_channels: Sequence[int], repeats: Sequence[int], arch: Arch):
        super().__init__()
        self.stem = stem(stem_channels)
        choices = iter(arch)
        stages = []
        in_channels = stem_channels
        for out_channels, n in zip(stage_channels, repeats):
            stages.append(
                nn.Sequential(
                    *(
                        ShuffleBlock(
                            in_channels if j == 0 else out_channels, out_channels, 2 if j == 0 else 1, next(choices)
                        )
                        for j in range(n)
                    )
                )
            )
            in_channels = out_channels
        self.stages = nn.ModuleList(stages)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(images)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


class ShuffleNetSupernet(Supernet):
    """Stem plus a ``ChoiceBlock`` at every position; ``activate(arch)`` picks the path ``forward`` runs."""

    def __init__(self, stem_channels: int, stage_channels: Sequence[int], repeats: Sequence[int]):
        super().__init__()
        self.stem = stem(stem_channels)
        stages = []
        in_channels = stem_channels
        for out_channels, n in zip(stage_channels, repeats):
            stages.append(
                nn.ModuleList(
                    ChoiceBlock(in_channels if j == 0 else out_channels, out_channels, 2 if j == 0 else 1)
                    for j in range(n)
                )
            )
            in_channels = out_channels
        self.stages = nn.ModuleList(stages)
        self.positions = sum(repeats)

    def activate(self, arch: Arch) -> None:
        arch = tuple(int(c) for c in arch)
        if len(arch) != self.positions or not all(0 <= c < len(KERNELS) for c in arch):
            raise NasEngineError(
                f"architecture {arch} does not fit this supernet: it needs {self.positions} choices in "
                f"0..{len(KERNELS) - 1}"
            )
        self.arch = arch

    def distill_pairs(
        self, teacher: nn.Module, inputs: torch.Tensor, arch: Arch
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if not isinstance(teacher, ShuffleNetBackbone) or len(teacher.stages) != len(self.stages):
            raise NasEngineError("the distillation teacher must be a standalone network of the same space")
        with torch.no_grad():
            x = teacher.stem(inputs)
            targets = []
            for stage in teacher.stages:
                for block in stage:
                    targets.append((x, block(x)))
                    x = targets[-1][1]
        blocks = [block for stage in self.stages for block in stage]
        return [(block(given, int(choice)), wanted) for block, choice, (given, wanted) in zip(blocks, arch, targets)]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if self.arch is None:
            raise NasEngineError("the supernet has no active path: call supernet.activate(arch) before forward")
        choices = iter(self.arch)
        x = self.stem(images)
        outputs = []
        for stage in self.stages:
            for block in stage:
                x = block(x, next(choices))
            outputs.append(x)
        return outputs


class ShuffleNetSpace(Space):
    """Shared code of the two ShuffleNetV2 spaces; subclasses set the depth and widths."""

    repeats: ClassVar[tuple[int, int, int, int]]
    """Blocks per stage; a stage opens with a stride-2 block (the report's architecture figure draws them)."""
    choice_names: ClassVar[tuple[str, ...]] = ("3×3", "5×5", "7×7", "Xception")
    """Each choice's name, in ``KERNELS`` order (figures and tables)."""
    baseline_name: ClassVar[str]
    """The all-3×3 ShuffleNetV2 baseline in ``named`` (the engine retrains it beside the winner)."""

    def __init__(self, stem_channels: int, stage_channels: Sequence[int], named: dict[str, Arch]):
        self.stem_channels = stem_channels
        self.out_channels = list(stage_channels)
        self.choices = (len(KERNELS),) * sum(self.repeats)
        self.named = {**named, self.baseline_name: (0,) * len(self.choices)}

    def _check(self, arch: Arch) -> Arch:
        arch = tuple(int(c) for c in arch)
        if len(arch) != len(self.choices) or not all(0 <= c < n for c, n in zip(arch, self.choices)):
            raise NasEngineError(
                f"architecture {arch} does not fit {self.name}: it needs {len(self.choices)} choices in "
                f"0..{len(KERNELS) - 1}"
            )
        return arch

    def build_supernet(self) -> ShuffleNetSupernet:
        return ShuffleNetSupernet(self.stem_channels, self.out_channels, self.repeats)

    def build_network(self, arch: Arch) -> ShuffleNetBackbone:
        return ShuffleNetBackbone(self.stem_channels, self.out_channels, self.repeats, self._check(arch))

    def extract_network(self, supernet: Supernet, arch: Arch) -> ShuffleNetBackbone:
        if not isinstance(supernet, ShuffleNetSupernet):
            raise NasEngineError(f"expected a {self.name} supernet, got {type(supernet).__name__}")
        arch = self._check(arch)
        network = self.build_network(arch)
        network.stem.load_state_dict(supernet.stem.state_dict())
        choices = iter(arch)
        for stage, super_stage in zip(network.stages, supernet.stages, strict=True):
            for block, choice_block in zip(stage, super_stage, strict=True):
                block.load_state_dict(choice_block.choices[next(choices)].state_dict())
        return network.to(next(supernet.parameters()).device)

    def cost_parts(self, image_size: int) -> Iterator[tuple[int | None, int | None, nn.Module, tuple[int, ...]]]:
        # The stride-1 blocks of a stage are identical, so one module per choice serves all of them: the
        # FLOPs table traces a module it meets again at the same input shape only once.
        size = (image_size + 1) // 2  # after the stem's 3×3 conv, stride 2, padding 1
        yield None, None, stem(self.stem_channels), (1, 3, image_size, image_size)
        start, in_channels = 0, self.stem_channels
        for out_channels, n in zip(self.out_channels, self.repeats):
            for choice in range(len(KERNELS)):
                yield start, choice, ShuffleBlock(in_channels, out_channels, 2, choice), (1, in_channels, size, size)
            size = (size + 1) // 2
            repeated = [ShuffleBlock(out_channels, out_channels, 1, choice) for choice in range(len(KERNELS))]
            for position in range(start + 1, start + n):
                for choice, block in enumerate(repeated):
                    yield position, choice, block, (1, out_channels, size, size)
            start, in_channels = start + n, out_channels


class ShuffleNetSmall(ShuffleNetSpace):
    """20 blocks (4, 4, 8, 4), stem 16, stages 64/160/320/640: the paper's ~300M-FLOPs space."""

    name = "shufflenet-small"
    description = "DetNAS ShuffleNetV2 space, 20 blocks × 4 choices, stages 64/160/320/640 (~300M FLOPs)"
    repeats = (4, 4, 8, 4)
    baseline_name = "shufflenetv2-20"
    default_flops_max = 300e6  # the paper's search constraint for this space

    def __init__(self) -> None:
        super().__init__(
            16,
            (64, 160, 320, 640),
            {
                "detnas-coco-fpn-300m": (2, 1, 2, 0, 2, 1, 1, 2, 3, 3, 1, 3, 0, 0, 3, 1, 3, 1, 3, 2),
                "detnas-coco-retinanet-300m": (2, 3, 1, 1, 3, 2, 1, 3, 3, 1, 1, 1, 3, 3, 2, 0, 3, 3, 3, 3),
                "detnas-voc-fpn-300m": (2, 1, 0, 3, 1, 3, 0, 3, 2, 0, 1, 1, 3, 3, 3, 3, 3, 3, 3, 1),
                "detnas-voc-retinanet-300m": (1, 3, 0, 0, 2, 3, 3, 3, 2, 3, 3, 3, 3, 2, 2, 0, 2, 3, 1, 1),
            },
        )


class ShuffleNetLarge(ShuffleNetSpace):
    """40 blocks (8, 8, 16, 8); ``width="1.3G"`` (stem 48, stages 96/240/480/960) or ``"3.8G"``
    (stem 72, stages 172/432/864/1728)."""

    name = "shufflenet-large"
    description = (
        "DetNAS ShuffleNetV2 space, 40 blocks × 4 choices; width 1.3G (96/240/480/960) or 3.8G (172/432/864/1728)"
    )
    repeats = (8, 8, 16, 8)
    baseline_name = "shufflenetv2-40"
    WIDTHS: ClassVar[dict[str, tuple[int, tuple[int, int, int, int]]]] = {
        "1.3G": (48, (96, 240, 480, 960)),
        "3.8G": (72, (172, 432, 864, 1728)),
    }
    FLOPS_LIMITS: ClassVar[dict[str, float]] = {"1.3G": 1.3e9, "3.8G": 3.8e9}

    def __init__(self, width: str = "1.3G") -> None:
        if width not in self.WIDTHS:
            raise NasEngineError(f"unknown width {width!r} for {self.name}; choose one of {', '.join(self.WIDTHS)}")
        self.width = width
        self.default_flops_max = self.FLOPS_LIMITS[width]
        stem_channels, stage_channels = self.WIDTHS[width]
        super().__init__(
            stem_channels,
            stage_channels,
            {
                "detnasnet": (
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
                ),
            },
        )

    def options(self) -> dict[str, Any]:
        return {"width": self.width}
