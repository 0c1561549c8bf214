"""The ShuffleNetV2 spaces: block shapes and layer order, supernet paths, standalone extraction, path-wise SGD.

The tests run on one intra-op thread: their tiny batches gain nothing from more, and on the shared 2-core
machines two threads per process oversubscribe the cores.
"""

import random

import pytest
import torch
from torch import nn

from nasengine import registry
from nasengine.errors import NasEngineError
from nasengine.spaces.shufflenet import ShuffleBlock, ShuffleNetLarge, ShuffleNetSmall, ShuffleNetSupernet


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_arch(space, rng: random.Random) -> tuple[int, ...]:
    return tuple(rng.randrange(n) for n in space.choices)


@pytest.mark.parametrize("choice", range(4))
@pytest.mark.parametrize("stride, in_channels, size, out_size", [(1, 64, 15, 15), (2, 24, 15, 8), (2, 16, 16, 8)])
def test_block_output_shape_and_stride_for_every_choice(choice, stride, in_channels, size, out_size):
    block = ShuffleBlock(in_channels, 64, stride, choice)
    out = block(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 64, out_size, out_size)


@pytest.mark.parametrize("choice", range(4))
def test_stride1_block_passes_even_channels_through_and_odd_ones_through_the_branch(choice):
    block = ShuffleBlock(32, 32, 1, choice).eval()
    x = torch.randn(1, 32, 9, 9)
    out = block(x)
    assert torch.equal(out[:, :16], x[:, 0::2])
    assert torch.equal(out[:, 16:], block.right(x[:, 1::2]))
    assert (out[:, 16:] >= 0).all()  # the branch ends in a ReLU


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("choice", range(4))
def test_block_layers_follow_the_reference(choice, stride):
    """No conv bias, BN after every conv, no ReLU after a depthwise conv, the right kernels and mid width."""
    block = ShuffleBlock(24 if stride == 2 else 64, 64, stride, choice)
    kernel = (3, 5, 7, 3)[choice]
    for branch in filter(None, (block.left, block.right)):
        layers = list(branch)
        convs = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Conv2d)]
        for i in convs:
            conv = layers[i]
            assert conv.bias is None
            assert isinstance(layers[i + 1], nn.BatchNorm2d)
            if conv.groups > 1:  # depthwise
                assert conv.groups == conv.in_channels == conv.out_channels
                assert conv.kernel_size == (kernel, kernel)
                assert not isinstance(layers[i + 2], nn.ReLU)
            else:
                assert conv.kernel_size == (1, 1)
        assert isinstance(layers[-1], nn.ReLU)
    right = [layer for layer in block.right if isinstance(layer, nn.Conv2d)]
    assert len(right) == (6 if choice == 3 else 3)
    assert {conv.out_channels for conv in right[:-1] if conv.groups == 1} == {32}  # mid = out // 2
    assert right[-1].out_channels == (64 - 24 if stride == 2 else 32)
    strided = [conv for conv in right if conv.stride == (2, 2)]
    assert len(strided) == (stride == 2) and all(conv.groups > 1 for conv in strided)


@pytest.mark.parametrize("space", [ShuffleNetSmall(), ShuffleNetLarge()], ids=lambda s: s.name)
def test_supernet_returns_four_maps_with_strides_4_8_16_32(space):
    supernet = space.build_supernet().eval()
    supernet.activate(random_arch(space, random.Random(0)))
    with torch.no_grad():
        maps = supernet(torch.randn(1, 3, 64, 64))
    assert [m.shape[1] for m in maps] == space.out_channels
    assert [64 // m.shape[-1] for m in maps] == [4, 8, 16, 32]
    assert len(space.choices) == len(space.named[space.baseline_name]) == sum(space.repeats)


def test_forward_before_activate_explains_what_to_do():
    supernet = ShuffleNetSmall().build_supernet()
    with pytest.raises(NasEngineError, match=r"activate\(arch\)"):
        supernet(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("arch", [(0,) * 19, (0,) * 19 + (4,), (-1,) + (0,) * 19])
def test_wrong_architectures_are_refused(arch):
    space = ShuffleNetSmall()
    with pytest.raises(NasEngineError, match="20 choices"):
        space.build_supernet().activate(arch)
    with pytest.raises(NasEngineError, match="20 choices"):
        space.build_network(arch)


def test_extracted_network_equals_the_supernet_path():
    torch.manual_seed(0)
    space = ShuffleNetSmall()
    supernet = space.build_supernet()
    arch = space.named["detnas-coco-fpn-300m"]
    rng = random.Random(0)
    with torch.no_grad():  # train-mode passes give every BN non-trivial running statistics
        for path in (arch, random_arch(space, rng), arch):
            supernet.activate(path)
            supernet(torch.randn(4, 3, 48, 48) * 3 + 1)
    network = space.extract_network(supernet, arch)
    assert isinstance(network, nn.Module) and not isinstance(network, ShuffleNetSupernet)
    supernet.activate(arch)
    supernet.eval()
    network.eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = supernet(images), network(images)
    assert len(got) == 4
    for e, g in zip(expected, got):
        assert torch.equal(e, g)
    mean = network.stages[0][0].right[1].running_mean
    assert mean.abs().sum() > 0


def test_standalone_state_dict_maps_onto_the_chosen_supernet_choice():
    space = ShuffleNetSmall()
    arch = random_arch(space, random.Random(1))
    supernet_keys = set(space.build_supernet().state_dict())
    positions = [(i, j) for i, n in enumerate(space.repeats) for j in range(n)]
    choice_of = dict(zip(positions, arch))
    for key in space.build_network(arch).state_dict():
        parts = key.split(".")
        if parts[0] == "stages":
            i, j = int(parts[1]), int(parts[2])
            key = ".".join(parts[:3] + ["choices", str(choice_of[i, j])] + parts[3:])
        assert key in supernet_keys


def test_sgd_step_leaves_inactive_paths_without_grad_and_unchanged():
    torch.manual_seed(0)
    space = ShuffleNetSmall()
    supernet = space.build_supernet().train()
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    first, second = (0,) * 20, (1,) * 20
    paths = {}
    for arch in (first, second):
        supernet.activate(arch)
        used = {id(p) for p in supernet.stem.parameters()}
        for stage_index, stage in enumerate(supernet.stages):
            offset = sum(space.repeats[:stage_index])
            for j, block in enumerate(stage):
                used |= {id(p) for p in block.choices[arch[offset + j]].parameters()}
        paths[arch] = used
    before = {name: p.detach().clone() for name, p in supernet.named_parameters()}
    for arch in (first, second):
        supernet.activate(arch)
        optimizer.zero_grad(set_to_none=True)
        after_first = {name: p.detach().clone() for name, p in supernet.named_parameters()}
        sum(m.square().mean() for m in supernet(torch.randn(2, 3, 32, 32))).backward()
        optimizer.step()
    for name, p in supernet.named_parameters():
        if id(p) in paths[second]:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
            assert torch.equal(p, after_first[name]), name  # momentum from step 1 must not move it in step 2
        if id(p) not in paths[first] | paths[second]:
            assert torch.equal(p, before[name]), name
    assert not torch.equal(
        supernet.stages[0][0].choices[0].right[0].weight, before["stages.0.0.choices.0.right.0.weight"]
    )


def test_named_architectures_fit_their_space():
    small, large = ShuffleNetSmall(), ShuffleNetLarge()
    assert set(small.named) == {
        "detnas-coco-fpn-300m",
        "detnas-coco-retinanet-300m",
        "detnas-voc-fpn-300m",
        "detnas-voc-retinanet-300m",
        "shufflenetv2-20",
    }
    assert set(large.named) == {"detnasnet", "shufflenetv2-40"}
    for space in (small, large, ShuffleNetLarge(width="3.8G")):
        assert space.choices == (4,) * sum(space.repeats)
        assert space.named[space.baseline_name] == (0,) * len(space.choices)
        for arch in space.named.values():
            assert len(arch) == len(space.choices) and all(0 <= c < 4 for c in arch)


def test_spaces_load_through_the_registry_and_rebuild_from_their_options():
    small = registry.create("space", "shufflenet-small")
    assert isinstance(small, ShuffleNetSmall) and small.options() == {}
    wide = registry.create("space", "shufflenet-large", width="3.8G")
    assert wide.out_channels == [172, 432, 864, 1728]
    assert ShuffleNetLarge(**wide.options()).out_channels == wide.out_channels
    assert ShuffleNetLarge().out_channels == [96, 240, 480, 960]
    assert small.out_channels == [64, 160, 320, 640]
    with pytest.raises(NasEngineError, match="unknown width '2G'.*1.3G, 3.8G"):
        ShuffleNetLarge(width="2G")
