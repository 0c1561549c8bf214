"""Path-wise supernet training: uniform sampling, untouched inactive paths, exact resume, BN recalibration."""

import json
import math

import numpy as np
import pytest
import torch
from resume_check import assert_resume_matches

from nasengine import registry
from nasengine.protocol.bn_calibration import batch_norms, recalibrate_bn
from nasengine.protocol.path_sampling import uniform_path
from nasengine.protocol.training import learning_rate, param_groups, train
from nasengine.settings.config import Schedule

ARCH = (2, 1, 2, 0, 2, 1, 1, 2, 3, 3, 1, 3, 0, 0, 3, 1, 3, 1, 3, 2)


@pytest.fixture(scope="module")
def space():
    return registry.create("space", "shufflenet-small")


@pytest.fixture(scope="module")
def task():
    return registry.create("task", "fashion-mnist", image_size=32, search_size=64, calib_size=32)


def test_path_sampler_is_uniform_over_every_position():
    choices = (4,) * 20
    samples = np.array([uniform_path(choices, seed=3, iteration=i) for i in range(4000)])
    counts = np.stack([(samples == c).sum(axis=0) for c in range(4)], axis=1)  # positions x choices
    expected = len(samples) / 4
    chi_square = ((counts - expected) ** 2 / expected).sum()
    # 20 positions x 3 degrees of freedom = 60; the 0.1% critical value of chi-square(60) is 99.6.
    assert chi_square < 99.6
    assert uniform_path(choices, 3, 17) == uniform_path(choices, 3, 17)
    assert len({uniform_path(choices, 3, i) for i in range(50)}) == 50


def test_no_weight_decay_on_batchnorm_and_biases(space):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    decay, no_decay = param_groups(model, 1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert len(no_decay["params"]) == 4  # conv bias, BN weight and bias, linear bias


def test_learning_rate_schedules():
    linear = Schedule(iterations=100, batch_size=1, lr_schedule="linear")
    assert learning_rate(linear, 0.5, 0) == 0.5 and learning_rate(linear, 0.5, 50) == 0.25
    step = Schedule(
        iterations=90, batch_size=1, lr_schedule="step", milestones=[60 / 90, 80 / 90], warmup_iterations=10
    )
    assert learning_rate(step, 0.02, 0) == pytest.approx(0.002)
    assert learning_rate(step, 0.02, 59) == pytest.approx(0.02)
    assert learning_rate(step, 0.02, 60) == pytest.approx(0.002)
    assert learning_rate(step, 0.02, 85) == pytest.approx(0.0002)


def _snapshot(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_inactive_paths_are_bit_identical_after_training_steps(space, task, tmp_path):
    supernet = space.build_supernet()
    model = task.build_model(supernet, space.out_channels)
    before = _snapshot(supernet)
    schedule = Schedule(iterations=3, batch_size=8, lr=0.1, momentum=0.9, weight_decay=1e-3, checkpoint_every=100)
    train(
        model,
        task,
        task.dataset("train", train=True),
        schedule,
        tmp_path,
        seed=0,
        device=torch.device("cpu"),
        description="test",
        paths=lambda it: [ARCH],
        activate=supernet.activate,
    )
    after = _snapshot(supernet)
    active = {f"stages.{s}.{b}.choices.{c}." for s, b, c in _positions(ARCH)}
    changed_active = changed_inactive = 0
    for name in before:
        same = torch.equal(before[name], after[name])
        if ".choices." in name and not any(name.startswith(prefix) for prefix in active):
            changed_inactive += not same
        elif ".choices." in name:
            changed_active += not same
    assert changed_inactive == 0
    assert changed_active > 0


def _positions(arch):
    """(stage, block, choice) of every position for the small space's 4,4,8,4 layout."""
    blocks = [4, 4, 8, 4]
    index = 0
    for stage, count in enumerate(blocks):
        for block in range(count):
            yield stage, block, arch[index]
            index += 1


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_resumed_training_equals_uninterrupted(space, task, tmp_path, precision):
    losses = []

    def run(directory, stop_at=None):
        torch.manual_seed(0)
        supernet = space.build_supernet()
        model = task.build_model(supernet, space.out_channels)

        def paths(iteration):
            if iteration == stop_at:
                raise KeyboardInterrupt
            return [uniform_path(space.choices, 5, iteration)]

        schedule = Schedule(iterations=4, batch_size=8, lr=0.05, checkpoint_every=2)
        train(
            model,
            task,
            task.dataset("train", train=True),
            schedule,
            directory,
            seed=1,
            device=torch.device("cpu"),
            description="test",
            paths=paths,
            activate=supernet.activate,
            precision=precision,
        )
        losses.extend(json.loads(line)["loss"] for line in (directory / "log.jsonl").read_text().splitlines())
        return model.state_dict()

    assert_resume_matches(run, tmp_path, stop_at=3, iterations=4)
    assert losses and all(math.isfinite(loss) for loss in losses)
    scaler = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True).get("grad_scaler")
    assert (scaler is not None) == (precision == "fp16")  # fp16's loss scale resumes with the weights


def test_mixed_precision_trains_under_autocast_and_fp32_stays_exact():
    from nasengine.protocol.precision import Mixed, resolve

    layer = torch.nn.Linear(4, 4)
    with Mixed("bf16", torch.device("cpu")).autocast():
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    with Mixed("fp32", torch.device("cpu")).autocast():
        assert layer(torch.ones(1, 4)).dtype == torch.float32
    assert resolve("auto", torch.device("cpu")) == "fp32" and resolve("bf16", torch.device("cpu")) == "bf16"


def test_bn_recalibration_reproduces_standalone_statistics(space, task):
    torch.manual_seed(0)
    supernet = space.build_supernet()
    supernet.activate(ARCH)
    model = task.build_model(supernet, space.out_channels)
    standalone = task.build_model(space.extract_network(supernet, ARCH), space.out_channels)
    standalone.load_state_dict(model.state_dict(), strict=False)
    loader = task.loader("calib", train=False, batch_size=16)
    assert recalibrate_bn(model, task, loader) == 32
    recalibrate_bn(standalone, task, loader)
    path_layers = [m for m in batch_norms(space.extract_network(supernet, ARCH))]
    alone_layers = batch_norms(standalone.backbone if hasattr(standalone, "backbone") else standalone)
    assert len(path_layers) == len(alone_layers) > 0
    for ours, theirs in zip(path_layers, alone_layers):
        assert torch.allclose(ours.running_mean, theirs.running_mean, atol=1e-5)
        assert torch.allclose(ours.running_var, theirs.running_var, atol=1e-5)
    # the statistics really were recomputed: not the initial zeros and ones
    assert not torch.allclose(path_layers[0].running_mean, torch.zeros_like(path_layers[0].running_mean))
