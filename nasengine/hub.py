"""``nasengine.backbone``: a found (or named) architecture as a backbone for torchvision's detectors, in one call.

::

    import nasengine
    from torchvision.models.detection import FasterRCNN

    model = FasterRCNN(nasengine.backbone("detnas-coco-fpn-300m"), num_classes=3)

The name is looked up among the named architectures of every registered space; ``run=`` takes the trained weights
of a run's retrained network instead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasengine import registry
from nasengine.arch import parse_arch
from nasengine.errors import NasEngineError
from nasengine.interfaces import Space


class FeatureMapsBackbone(nn.Module):
    """The space's network (``body``) as it is: ``forward(images)`` returns its list of feature maps, and
    ``out_channels`` is the list of their channels (``Space.out_channels``)."""

    def __init__(self, body: nn.Module, out_channels: Sequence[int]):
        super().__init__()
        self.body = body
        self.out_channels = list(out_channels)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.body(images)


class FeaturePyramidBackbone(nn.Module):
    """The space's network (``body``, four maps C2–C5) followed by torchvision's FPN with a max-pooled P6.

    ``forward(images)`` returns an ``OrderedDict`` of ``"0"``–``"3"`` (P2–P5, strides 4–32) and ``"pool"`` (P6),
    every map ``out_channels`` wide: what ``torchvision.models.detection.FasterRCNN`` (its default anchors and RoI
    pooler) expects, as from torchvision's own ``BackboneWithFPN``."""

    def __init__(self, body: nn.Module, in_channels: Sequence[int], out_channels: int):
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(in_channels), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(images)
        return self.fpn(OrderedDict([(str(i), feature) for i, feature in enumerate(features)]))


def backbone(
    name: str | Sequence[int] | None = None,
    *,
    space: str | None = None,
    space_options: dict[str, Any] | None = None,
    run: str | Path | None = None,
    entry: str = "best",
    fpn: bool = True,
    fpn_channels: int = 256,
) -> nn.Module:
    """A backbone of a named architecture (fresh weights) or of a run's retrained network (trained weights).

    - ``backbone("detnas-coco-fpn-300m")``: the named architecture of whichever registered space has that name
      (``space="..."`` picks the space when two have it, or takes choice indices: ``backbone("2,1,2,...",
      space="shufflenet-small")``; ``space_options`` are the space's options, e.g. ``{"width": "3.8G"}``).
    - ``backbone(run="runs/x", entry="best")``: the standalone network of the retrained entry (a folder of
      ``runs/x/retrain/``: ``best``, the baseline's name), with the weights of its fine-tuned detector.

    With ``fpn=True`` (the default) the result is a :class:`FeaturePyramidBackbone`: the network plus a new
    torchvision FPN (``fpn_channels`` wide, fresh weights), an ``nn.Module`` returning an ``OrderedDict`` of five
    maps with ``out_channels`` an int, ready for ``FasterRCNN(backbone, num_classes=...)``. With ``fpn=False`` it
    is a :class:`FeatureMapsBackbone`: ``forward(images)`` returns the network's list of feature maps (C2–C5 at
    strides 4, 8, 16 and 32 for a detection space) and ``out_channels`` is the list of their channels
    (``Space.out_channels``), as a head of your own or ``FeaturePyramidNetwork(backbone.out_channels, 256)`` takes
    it. Either way ``backbone.body`` is the space's standalone network, the module is on the CPU in train mode, and
    images are normalised as torchvision's detectors do it.
    """
    if (name is None) == (run is None):
        raise NasEngineError(
            "give an architecture name, e.g. backbone('detnas-coco-fpn-300m'), or a run, backbone(run='runs/x')"
        )
    if run is not None:
        from nasengine.rundir.retrained import load_retrained

        retrained = load_retrained(run, entry)
        body, out_channels = retrained.backbone, list(retrained.run.space.out_channels)
    else:
        assert name is not None
        chosen, arch = find_arch(name, space, space_options or {})
        body, out_channels = chosen.build_network(arch), list(chosen.out_channels)
    body.train()
    return FeaturePyramidBackbone(body, out_channels, fpn_channels) if fpn else FeatureMapsBackbone(body, out_channels)


def find_arch(name: str | Sequence[int], space: str | None, options: dict[str, Any]) -> tuple[Space, tuple[int, ...]]:
    """The space and architecture ``name`` means: a named architecture of ``space`` (or of the one registered
    space that has it), or with ``space`` any choice indices ``--arch`` takes."""
    if space is not None:
        chosen = registry.create("space", space, **options)
        text = name if isinstance(name, str) else ",".join(str(int(c)) for c in name)
        return chosen, parse_arch(text, chosen.choices, chosen.named)
    if not isinstance(name, str):
        raise NasEngineError("choice indices need their space: backbone([...], space='SPACE')")
    if options:
        raise NasEngineError("space_options need their space: backbone(name, space='SPACE', space_options={...})")
    spaces = _spaces()
    having = [s for s in spaces if name in s.named]
    if len(having) > 1:
        raise NasEngineError(
            f"architecture {name!r} is named in several spaces ({', '.join(s.name for s in having)}); "
            "pick one with space='...'"
        )
    if not having:
        known = "; ".join(f"{s.name}: {', '.join(sorted(s.named))}" for s in spaces if s.named)
        raise NasEngineError(f"unknown architecture {name!r}; known names: {known or 'none'}")
    return having[0], tuple(having[0].named[name])


def _spaces() -> list[Space]:
    """Every registered space built with its default options (those that import and need none)."""
    found = []
    for plugin in registry.plugins("space").values():
        if plugin.cls is None:
            continue
        try:
            found.append(plugin.cls())
        except Exception:  # a third-party space that needs options cannot be searched by name alone
            continue
    return found
