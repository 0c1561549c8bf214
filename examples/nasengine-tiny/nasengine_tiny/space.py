"""``tiny-convnet``: a plain conv net whose four stages each choose a 3×3 or a 5×5 kernel.

A complete space in under 80 lines: a supernet that holds both choices at every position, the
standalone network of one path, and the copy of a path's weights from one to the other. FLOPs come
from nasengine's full fvcore trace of ``build_network`` because this space does not split itself
into ``cost_parts`` (fine for a small space; large ones should, for speed).
"""

from __future__ import annotations

from torch import nn

from nasengine import Space
from nasengine.interfaces import Supernet

CHANNELS = [8, 16, 32, 64]
KERNELS = (3, 5)


def conv_bn_relu(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=2, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def stage_inputs() -> list[int]:
    return [3] + CHANNELS[:-1]


class TinySupernet(Supernet):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu(3, CHANNELS[0], 3)
        self.stages = nn.ModuleList(
            nn.ModuleList(conv_bn_relu(c_in if i else CHANNELS[0], c_out, k) for k in KERNELS)
            for i, (c_in, c_out) in enumerate(zip(stage_inputs(), CHANNELS))
        )

    def forward(self, images):
        if self.arch is None:
            raise RuntimeError("call activate(arch) before running the supernet")
        x, features = self.stem(images), []
        for stage, choice in zip(self.stages, self.arch):
            x = stage[choice](x)
            features.append(x)
        return features


class TinyNetwork(nn.Module):
    def __init__(self, arch):
        super().__init__()
        self.stem = conv_bn_relu(3, CHANNELS[0], 3)
        self.stages = nn.ModuleList(
            conv_bn_relu(c_in if i else CHANNELS[0], c_out, KERNELS[c])
            for i, (c_in, c_out, c) in enumerate(zip(stage_inputs(), CHANNELS, arch))
        )

    def forward(self, images):
        x, features = self.stem(images), []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class TinyConvNetSpace(Space):
    name = "tiny-convnet"
    description = "example plugin: plain conv net, 3x3 or 5x5 kernel per stage"
    choices = (2, 2, 2, 2)
    out_channels = CHANNELS
    named = {"all-3x3": (0, 0, 0, 0), "all-5x5": (1, 1, 1, 1)}
    baseline_name = "all-3x3"

    def build_supernet(self) -> TinySupernet:
        return TinySupernet()

    def build_network(self, arch) -> TinyNetwork:
        return TinyNetwork(arch)

    def extract_network(self, supernet: TinySupernet, arch) -> TinyNetwork:
        network = TinyNetwork(arch)
        network.stem.load_state_dict(supernet.stem.state_dict())
        for stage, options, choice in zip(network.stages, supernet.stages, arch):
            stage.load_state_dict(options[choice].state_dict())
        return network
