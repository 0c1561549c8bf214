"""`nasengine.backbone`: a named or retrained architecture drops into torchvision's Faster R-CNN."""

import subprocess
import sys

import pytest
import torch
from torchvision.models.detection import FasterRCNN

import nasengine
from nasengine.hub import FeaturePyramidBackbone
from nasengine.rundir.checkpoint import load_checkpoint
from nasengine.rundir.layout import RunLayout

FPN_300M = (2, 1, 2, 0, 2, 1, 1, 2, 3, 3, 1, 3, 0, 0, 3, 1, 3, 1, 3, 2)


def test_readme_example_trains_and_detects():
    torch.manual_seed(0)
    backbone = nasengine.backbone("detnas-coco-fpn-300m")
    model = FasterRCNN(backbone, num_classes=3, min_size=64, max_size=64)
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 80)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0], [0.0, 0.0, 20.0, 20.0]]), "labels": torch.tensor([2, 1])},
    ]
    losses = model(images, targets)
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} == set(losses)
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total) and backbone.body.stem[0].weight.grad is not None
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2 and all(d["boxes"].shape[1:] == (4,) for d in detections)


def test_fpn_backbone_is_what_torchvision_expects():
    backbone = nasengine.backbone("detnas-coco-fpn-300m", fpn_channels=32)
    assert isinstance(backbone, FeaturePyramidBackbone) and backbone.out_channels == 32
    features = backbone(torch.rand(1, 3, 64, 64))
    assert list(features) == ["0", "1", "2", "3", "pool"]
    assert [f.shape[-1] for f in features.values()] == [16, 8, 4, 2, 1]
    assert all(f.shape[1] == 32 for f in features.values())


def test_raw_body_returns_the_four_maps_with_their_channels():
    body = nasengine.backbone("shufflenetv2-20", fpn=False)
    assert body.out_channels == [64, 160, 320, 640]
    maps = body(torch.rand(2, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 16, 16), (160, 8, 8), (320, 4, 4), (640, 2, 2)]


def test_space_and_choice_indices_and_options():
    named = nasengine.backbone("detnas-coco-fpn-300m", fpn=False)
    by_indices = nasengine.backbone(FPN_300M, space="shufflenet-small", fpn=False)
    assert named.state_dict().keys() == by_indices.state_dict().keys()
    wide = nasengine.backbone("detnasnet", space="shufflenet-large", space_options={"width": "3.8G"}, fpn=False)
    assert wide.out_channels == [172, 432, 864, 1728]


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("detnas-imaginary",), {}, "unknown architecture 'detnas-imaginary'; known names: shufflenet-large: "),
        (("2,1,2",), {"space": "shufflenet-small"}, "architecture has 3 positions but the space has 20"),
        (("detnasnet",), {"space": "mobilenet"}, "unknown space 'mobilenet'; known spaces:"),
        ((), {}, "give an architecture name"),
        (("detnasnet",), {"run": "runs/x"}, "give an architecture name"),
    ],
)
def test_bad_requests_are_one_line(args, kwargs, message):
    with pytest.raises(nasengine.NasEngineError) as error:
        nasengine.backbone(*args, **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_run_weights_are_the_retrained_detectors_backbone(retrained_run):
    backbone = nasengine.backbone(run=retrained_run, entry="best")
    state = load_checkpoint(RunLayout(retrained_run).retrained_checkpoint("best"))["model"]
    trained = {k.removeprefix("backbone.body."): v for k, v in state.items() if k.startswith("backbone.body.")}
    body = backbone.body.state_dict()
    assert body.keys() == trained.keys()
    assert all(torch.equal(body[k], trained[k]) for k in body)
    fresh = nasengine.backbone("detnas-coco-fpn-300m").body.state_dict()
    assert not all(torch.equal(fresh[k], body[k]) for k in body if k.endswith("weight"))
    model = FasterRCNN(backbone, num_classes=3, min_size=64, max_size=64).eval()
    with torch.no_grad():
        assert len(model([torch.rand(3, 64, 64)])) == 1
    with pytest.raises(nasengine.NasEngineError, match="has no retrained entry 'shufflenetv2-20'; retrained: best"):
        nasengine.backbone(run=retrained_run, entry="shufflenetv2-20")


def test_importing_nasengine_does_not_import_torchvision():
    code = "import sys, nasengine; assert callable(nasengine.backbone); print('torchvision' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr
