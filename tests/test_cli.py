"""The command line as a user meets it: real subprocesses, exit codes, one-line errors."""

import json
import subprocess
import sys

import pytest

FPN_300M = "2,1,2,0,2,1,1,2,3,3,1,3,0,0,3,1,3,1,3,2"


def nasengine(*args):
    return subprocess.run([sys.executable, "-m", "nasengine", *args], capture_output=True, text=True, timeout=300)


def test_flops_json_reproduces_the_published_count():
    result = nasengine("flops", "--space", "shufflenet-small", "--arch", FPN_300M, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["flops"] == 288082368


def test_flops_accepts_named_architectures_and_space_options():
    result = nasengine("flops", "--space", "shufflenet-large", "--arch", "detnasnet", "--json")
    assert json.loads(result.stdout)["flops"] == 1269181536
    wide = nasengine(
        "flops", "--space", "shufflenet-large", "--space-option", "width=3.8G", "--arch", "detnasnet", "--json"
    )
    assert json.loads(wide.stdout)["flops"] > 3e9


@pytest.mark.parametrize(
    "arch, message",
    [
        ("2,1,2", "architecture has 3 positions but the space has 20"),
        (FPN_300M.replace("3", "7", 1), "choice 7 at position 8 is out of range"),
        ("detnas-imaginary", "unknown architecture 'detnas-imaginary'"),
    ],
)
def test_bad_arch_is_one_line_and_exit_code_2(arch, message):
    result = nasengine("flops", "--space", "shufflenet-small", "--arch", arch)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_unknown_space_lists_the_known_ones():
    result = nasengine("space", "mobilenet")
    assert result.returncode == 2
    assert "unknown space 'mobilenet'; known spaces:" in result.stderr and "shufflenet-small" in result.stderr


def test_list_shows_every_builtin_plugin():
    result = nasengine("list")
    assert result.returncode == 0
    for name in (
        "shufflenet-small",
        "shufflenet-large",
        "fashion-mnist",
        "coco-fpn",
        "voc-retinanet",
        "evolution",
        "random",
    ):
        assert name in result.stdout
    assert "failed to import" not in result.stdout


def test_space_command_shows_size_range_and_names():
    result = nasengine("space", "shufflenet-small")
    assert result.returncode == 0
    assert "4^20 ≈ 1.10e+12" in result.stdout
    assert "min 237,222,720" in result.stdout and "max 365,472,576" in result.stdout
    assert "detnas-coco-fpn-300m" in result.stdout and "288,082,368" in result.stdout


def test_unsatisfiable_flops_window_names_the_space_range(tmp_path):
    result = nasengine(
        "random-baseline", "--preset", "smoke", "--flops-max", "1e8", "-n", "2", "--out", str(tmp_path / "b")
    )
    assert result.returncode == 2
    assert "fits flops ≤ 100.0 M MACs: the space spans 237.2 M MACs to 365.5 M MACs" in result.stderr
