"""Supernet training recipes: fair paths, config checks, block-wise distillation, and a supernet that learns."""

import json

import pytest
import torch
from resume_check import assert_resume_matches

from nasengine import registry
from nasengine.errors import NasEngineError
from nasengine.interfaces import Supernet, implements
from nasengine.protocol.distillation import backbone_input, inherit_shared
from nasengine.protocol.engine import Run
from nasengine.protocol.path_sampling import fair_paths, paths_for, uniform_path
from nasengine.settings import config as configuration


def test_fair_paths_train_every_choice_of_every_position_once():
    choices = (4, 4, 3, 2, 4)
    for iteration in range(20):
        paths = fair_paths(choices, seed=1, iteration=iteration)
        assert len(paths) == 4
        for position, n in enumerate(choices):
            taken = [path[position] for path in paths]
            assert set(taken) == set(range(n))
            if n == 4:
                assert sorted(taken) == [0, 1, 2, 3]
    assert fair_paths(choices, 1, 5) == fair_paths(choices, 1, 5)
    assert fair_paths(choices, 1, 5) != fair_paths(choices, 1, 6)


def test_paths_for_each_sampling():
    choices = (4,) * 6
    assert paths_for("uniform", choices, 2, 3) == [uniform_path(choices, 2, 3)]
    assert paths_for("distill", choices, 2, 3) == [uniform_path(choices, 2, 3)]
    assert len(paths_for("fair", choices, 2, 3)) == 4
    with pytest.raises(NasEngineError, match="unknown sampling"):
        paths_for("greedy", choices, 2, 3)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"pretrain_schedule": {"sampling": "greedy"}},
            "pretrain_schedule.sampling must be one of 'uniform', 'fair', 'distill'",
        ),
        ({"finetune_schedule": {"sampling": "distill"}}, "for pre-training only"),
        ({"pretrain_schedule": {"distill_fraction": 1.0}}, r"distill_fraction must be a number in \(0, 1\)"),
    ],
)
def test_bad_sampling_settings_are_refused(overrides, message):
    with pytest.raises(NasEngineError, match=message):
        configuration.resolve("smoke", overrides=overrides)


def test_presets_sampling():
    assert configuration.resolve("paper").pretrain_schedule.sampling == "uniform"  # the paper's SPOS sampling
    assert configuration.resolve("demo").pretrain_schedule.sampling == "distill"


def test_shufflenet_distill_pairs_follow_the_teacher_position_by_position():
    space = registry.create("space", "shufflenet-small")
    assert implements(space.build_supernet(), "distill_pairs")
    assert not implements(Supernet(), "distill_pairs")  # the contract's optional method, left out
    torch.manual_seed(0)
    supernet, teacher = space.build_supernet(), space.build_network((0,) * 20)
    arch = uniform_path(space.choices, 0, 0)
    inputs = torch.rand(2, 3, 32, 32)
    pairs = supernet.distill_pairs(teacher.eval(), inputs, arch)
    assert len(pairs) == 20
    assert all(out.shape == target.shape and out.requires_grad and not target.requires_grad for out, target in pairs)
    # a supernet holding the teacher's weights in choice 0 reproduces the teacher exactly on the all-0 path
    for stage_index, stage in enumerate(teacher.stages):
        for block_index, block in enumerate(stage):
            supernet.stages[stage_index][block_index].choices[0].load_state_dict(block.state_dict())
    supernet.eval()
    exact = supernet.distill_pairs(teacher, inputs, (0,) * 20)
    assert all(torch.equal(out, target) for out, target in exact)
    with pytest.raises(NasEngineError, match="same space"):
        supernet.distill_pairs(torch.nn.Identity(), inputs, arch)


def test_backbone_input_is_what_the_model_feeds_its_backbone_and_head_is_inherited():
    space = registry.create("space", "shufflenet-small")
    task = registry.create("task", "fashion-mnist", search_size=64, calib_size=16)
    teacher = task.build_model(space.build_network((0,) * 20), space.out_channels)
    images, labels = task.collate([task.dataset("train", train=False)[i] for i in range(4)])
    captured = backbone_input(teacher, teacher.backbone, task, (images, labels))
    assert torch.allclose(captured, (images - teacher.mean) / teacher.std)
    student = task.build_model(space.build_supernet(), space.out_channels)
    copied = inherit_shared(student, teacher)
    assert copied > 0
    assert torch.equal(student.head.fc.weight, teacher.head.fc.weight)
    assert torch.equal(student.backbone.stem[0].weight, teacher.backbone.stem[0].weight)


@pytest.mark.slow
def test_distilled_supernet_learns_well_below_chance(tmp_path):
    """The guard of the demo's recipe: a short pre-training (about 2 minutes on 2 cores) ends clearly
    below chance (ln 10 = 2.30) on the embedded Fashion-MNIST, where uniform sampling stays above it."""
    overrides = {
        "pretrain_schedule": {
            "sampling": "distill",
            "iterations": 600,
            "distill_fraction": 0.5,
            "checkpoint_every": 1000,
        }
    }
    run = Run.create(tmp_path / "run", configuration.resolve("demo", overrides=overrides))
    run.pretrain()
    losses = [json.loads(line)["loss"] for line in (run.dir / "pretrain" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 300  # the end-to-end half; the other half was block-wise distillation
    assert sum(losses[-50:]) / 50 < 1.9  # measured: 1.44 (uniform sampling on this schedule: 2.4-2.6)


def test_interrupted_distillation_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import nasengine.protocol.distillation as distill_module
    from nasengine.settings.config import Schedule

    space = registry.create("space", "shufflenet-small")
    task = registry.create("task", "fashion-mnist", search_size=64, calib_size=16)
    schedule = Schedule(iterations=4, batch_size=8, checkpoint_every=2, warmup_iterations=1)
    real_path = distill_module.uniform_path

    def run(directory, stop_at=None):
        torch.manual_seed(0)
        teacher = space.build_network((0,) * 20)
        teacher_model = task.build_model(teacher, space.out_channels)
        supernet = space.build_supernet()
        model = task.build_model(supernet, space.out_channels)

        def path(choices, seed, iteration):
            if iteration == stop_at:
                raise KeyboardInterrupt
            return real_path(choices, seed, iteration)

        monkeypatch.setattr(distill_module, "uniform_path", path)
        distill_module.distill(
            model,
            supernet,
            teacher_model,
            teacher,
            task,
            task.dataset("train", train=True),
            space.choices,
            schedule,
            4,
            directory,
            seed=3,
            description="test",
        )
        return model.state_dict()

    assert_resume_matches(run, tmp_path, stop_at=3, iterations=4)
