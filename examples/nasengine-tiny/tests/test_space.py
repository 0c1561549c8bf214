"""The plugin's own tests: one line per rule set, from ``nasengine.testing``.

Run them from this folder with ``python -m pytest`` (nasengine installed, this package importable).
"""

from nasengine_tiny.space import TinyConvNetSpace

from nasengine.testing import check_space, check_task


def test_the_space_keeps_the_rules_for_detection():
    check_space(TinyConvNetSpace())  # supernet = extracted network, four maps at strides 4/8/16/32, options


def test_the_space_keeps_the_rules_for_classification():
    check_space(TinyConvNetSpace(), detection=False)


def test_its_baseline_network_trains_under_a_classification_task():
    from nasengine import registry

    space = TinyConvNetSpace()
    task = registry.create("task", "fashion-mnist", search_size=4, calib_size=2, test_size=4, batch_size=2)
    check_task(task, backbone=space.build_network(space.named[space.baseline_name]), out_channels=space.out_channels)
