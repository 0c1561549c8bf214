"""`nasengine export`: each format loads without nasengine and computes what the PyTorch network computes."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from nasengine import NasEngineError
from nasengine.cli import cli
from nasengine.export import export
from nasengine.rundir.layout import RunLayout
from nasengine.rundir.retrained import load_retrained

SIZE = 64


@pytest.fixture(scope="module")
def backbone_export(retrained_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "backbone"
    return folder, export(retrained_run, out=folder, image_size=SIZE)


LOADER = textwrap.dedent(
    """
    import sys, numpy, onnxruntime, torch
    from safetensors.torch import load_file
    folder, what = sys.argv[1], sys.argv[2]
    if what == "detector":
        import torchvision  # noqa: F401  (registers the nms and roi_align ops the scripted detector calls)
    images = torch.load(f"{folder}/input.pt")
    scripted = torch.jit.load(f"{folder}/{what}.torchscript.pt")
    session = onnxruntime.InferenceSession(f"{folder}/{what}.onnx", providers=["CPUExecutionProvider"])
    with torch.no_grad():
        if what == "backbone":
            ts = list(scripted(images))
            ort = session.run(None, {"images": images.numpy()})
        else:
            ts = list(scripted([images[0]])[1][0].values())
            ort = session.run(None, {"images": images[0].numpy()})
    weights = load_file(f"{folder}/{what}.safetensors")
    assert "nasengine" not in sys.modules, "the exports must load without nasengine"
    torch.save({"torchscript": ts, "onnx": [torch.from_numpy(o) for o in ort], "weights": weights}, f"{folder}/out.pt")
    """
)


def load_elsewhere(folder, what, images):
    """Run the exports in a fresh interpreter that imports only torch, onnxruntime and safetensors."""
    torch.save(images, folder / "input.pt")
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(folder), what], capture_output=True, text=True, timeout=120, cwd=folder
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return torch.load(folder / "out.pt")


def test_backbone_exports_compute_the_trained_backbone_without_nasengine(retrained_run, backbone_export):
    folder, info = backbone_export
    retrained = load_retrained(retrained_run)
    images = torch.randn(2, 3, 96, 80)  # not the example's size: batch, height and width are dynamic
    with torch.no_grad():
        expected = retrained.backbone(images)
    loaded = load_elsewhere(folder, "backbone", images)
    assert len(loaded["torchscript"]) == len(loaded["onnx"]) == 4
    for ours, scripted, ort in zip(expected, loaded["torchscript"], loaded["onnx"]):
        torch.testing.assert_close(scripted, ours, rtol=0, atol=1e-5)
        torch.testing.assert_close(ort, ours, rtol=0, atol=1e-4)
    fresh = retrained.run.space.build_network(retrained.arch).eval()
    fresh.load_state_dict(loaded["weights"])
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(fresh(images), expected))


def test_backbone_json_describes_network_files_and_opset(retrained_run, backbone_export):
    folder, info = backbone_export
    assert json.loads((folder / "backbone.json").read_text()) == info
    test = json.loads((RunLayout(retrained_run).retrain_entry("best") / "test.json").read_text())
    assert info["space"] == "shufflenet-small" and info["arch"] == test["arch"]
    assert (info["flops"], info["params"], info["test"]) == (test["flops"], test["params"], test["test"])
    assert info["params"] == info["exported_params"]
    assert [(o["name"], o["channels"], o["stride"]) for o in info["outputs"]] == [
        ("c2", 64, 4),
        ("c3", 160, 8),
        ("c4", 320, 16),
        ("c5", 640, 32),
    ]
    assert set(info["files"]) == {"torchscript", "onnx", "safetensors"}
    onnx = info["files"]["onnx"]
    assert onnx["opset"] == 20 and onnx["output_names"] == ["c2", "c3", "c4", "c5"]
    assert onnx["max_abs_diff"] < 1e-4 and info["files"]["torchscript"]["max_abs_diff"] < 1e-5
    for file in info["files"].values():
        assert (folder / file["file"]).stat().st_size == file["bytes"] > 1e6
        assert (folder / file["file"]).stat().st_mode & 0o044 == 0o044  # readable by others: meant to be shared
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".partial-")]  # every file moved into place


@pytest.mark.slow
def test_detector_exports_in_every_format(retrained_run, tmp_path):
    info = export(retrained_run, what="detector", out=tmp_path, image_size=SIZE)
    onnx = info["files"]["onnx"]
    assert onnx["opset"] == 17 and onnx["output_names"] == ["boxes", "labels", "scores"]
    retrained = load_retrained(retrained_run)
    image = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = list(retrained.detector([image[0]])[0].values())
    loaded = load_elsewhere(tmp_path, "detector", image)
    for ours, scripted, ort in zip(expected, loaded["torchscript"], loaded["onnx"]):
        torch.testing.assert_close(scripted, ours, rtol=0, atol=1e-5)
        assert ort.shape == ours.shape
        torch.testing.assert_close(ort.to(ours.dtype), ours, rtol=1e-4, atol=1e-3)  # boxes are in pixels
    state = retrained.detector.state_dict()
    assert set(loaded["weights"]) == set(state)
    assert all(torch.equal(loaded["weights"][k], state[k]) for k in state)


def test_export_picks_the_entry_by_architecture(retrained_run, tmp_path):
    info = export(retrained_run, arch="detnas-coco-fpn-300m", formats="safetensors", out=tmp_path, image_size=SIZE)
    assert info["entry"] == "best" and info["arch_text"].startswith("2,1,2,0,")
    assert list(info["files"]) == ["safetensors"] and not (tmp_path / "backbone.onnx").exists()
    with pytest.raises(
        NasEngineError, match=r"is not retrained in .*; retrained: best \(2,1,2,.*\); train it in a run of its own"
    ):
        export(retrained_run, arch="detnas-voc-fpn-300m", formats="safetensors", out=tmp_path)


def test_a_format_that_fails_names_the_formats_that_worked(retrained_run, tmp_path, monkeypatch):
    def unscriptable(module):
        raise RuntimeError("Unknown type constructor OrderedDict\n  File ...")

    monkeypatch.setattr(torch.jit, "script", unscriptable)
    with pytest.raises(NasEngineError) as error:
        export(retrained_run, what="detector", formats="torchscript,safetensors", out=tmp_path, image_size=SIZE)
    message = str(error.value)
    assert "cannot be exported as torchscript (torchscript: RuntimeError: Unknown type constructor" in message
    assert "formats that worked: safetensors" in message and "\n" not in message
    assert (tmp_path / "detector.safetensors").exists() and not (tmp_path / "detector.torchscript.pt").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"entry": "imaginary"}, "has no retrained entry 'imaginary'; retrained: best (2,1,2,"),
        ({"formats": "torchscript,tflite"}, "unknown export format 'tflite'; formats: torchscript, onnx, safetensors"),
        ({"what": "head"}, "unknown export target 'head'; choose backbone or detector"),
    ],
)
def test_bad_requests_are_one_line(retrained_run, tmp_path, kwargs, message):
    with pytest.raises(NasEngineError) as error:
        export(retrained_run, out=tmp_path, **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_run_without_retrain_says_what_to_run(retrained_run, tmp_path):
    shutil.copy(RunLayout(retrained_run).config, tmp_path / "config.toml")
    with pytest.raises(NasEngineError, match=rf"has no retrained network yet; run 'nasengine retrain {tmp_path}'"):
        export(tmp_path)


def test_a_missing_package_says_how_to_install_it(retrained_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import safetensors now raises ImportError
    with pytest.raises(NasEngineError, match=r"needs the safetensors package; .*pip install 'nasengine\[export\]'"):
        export(retrained_run, formats="torchscript,safetensors", out=tmp_path)
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_cli_exports_into_the_run_directory(retrained_run, tmp_path):
    run = Path(shutil.copytree(retrained_run, tmp_path / "run"))  # the shared run is never written into
    args = ["export", str(run), "--format", "torchscript", "--image-size", "64"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    folder = RunLayout(run).export("best", "backbone")
    assert (folder / "backbone.torchscript.pt").exists() and (folder / "backbone.json").exists()
    assert "torchscript: backbone.torchscript.pt" in result.stdout and "max |diff| vs PyTorch 0" in result.output


def test_cli_errors_are_one_line_with_exit_code_2(retrained_run):
    result = subprocess.run(
        [sys.executable, "-m", "nasengine", "export", str(retrained_run), "--format", "pickle"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    expected = "error: unknown export format 'pickle'; formats: torchscript, onnx, safetensors (comma-separated)\n"
    assert result.stderr == expected
