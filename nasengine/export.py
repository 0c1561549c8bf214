"""``nasengine export``: a retrained network as TorchScript, ONNX and safetensors, with a JSON that describes it.

What is exported (``what``):

- ``backbone`` — the standalone network alone, with its trained weights. Input ``images``, an ``(N, 3, H, W)``
  float tensor normalised as the detector's transform does it (mean/std in the JSON); outputs the space's feature
  maps in order, named ``c2``, ``c3``, ... (C2–C5 at strides 4–32 for a detection space). TorchScript is
  ``torch.jit.script`` of the network (it returns the maps as a list); ONNX comes from ``torch.export``
  (opset ``BACKBONE_OPSET``) with batch, height and width dynamic.
- ``detector`` — the whole model the run trained (torchvision's Faster R-CNN or RetinaNet for the built-in tasks).
  Input: one ``(3, H, W)`` image in [0, 1], resized and normalised inside. TorchScript is ``torch.jit.script``
  (called on a list of images it returns ``(losses, detections)``); ONNX comes from the TorchScript-based exporter
  (opset ``DETECTOR_OPSET``, one image per call, outputs ``boxes``, ``labels``, ``scores``), because
  ``torch.export`` cannot trace the data-dependent NMS of torchvision's detectors.

safetensors holds the ``state_dict`` of either. Each export is checked before it is reported: TorchScript and ONNX
(with onnxruntime) are run on the example input and their largest difference from PyTorch is written to the JSON.
A format that fails for a detector is reported in one line with the formats that worked.
"""

from __future__ import annotations

import importlib
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasengine import console
from nasengine.arch import format_arch
from nasengine.errors import NasEngineError
from nasengine.protocol.limits import configured_limits
from nasengine.rundir.lock import hold_run_lock
from nasengine.rundir.manifest import verify_run
from nasengine.rundir.records import write_json
from nasengine.rundir.retrained import Retrained, load_retrained

FORMATS = ("torchscript", "onnx", "safetensors")
WHATS = ("backbone", "detector")
BACKBONE_OPSET = 20  # what torch.export's ONNX translation targets natively (no version conversion)
DETECTOR_OPSET = 17
REQUIRES = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "safetensors": ("safetensors",)}
SUFFIXES = {"torchscript": ".torchscript.pt", "onnx": ".onnx", "safetensors": ".safetensors"}


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"torchscript,onnx"`` → ``("torchscript", "onnx")``; a one-line error for a name that is not a format."""
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    for name in names:
        if name not in FORMATS:
            raise NasEngineError(f"unknown export format {name!r}; formats: {', '.join(FORMATS)} (comma-separated)")
    if not names:
        raise NasEngineError(f"no export format given; formats: {', '.join(FORMATS)} (comma-separated)")
    return tuple(dict.fromkeys(names))


def require(formats: Sequence[str]) -> None:
    """A one-line error naming the first missing package a format needs, and how to install them all."""
    for fmt in formats:
        for module in REQUIRES.get(fmt, ()):
            try:
                importlib.import_module(module)
            except ImportError:
                raise NasEngineError(
                    f"exporting {fmt} needs the {module} package; install it with: pip install 'nasengine[export]'"
                ) from None


class FeatureMaps(nn.Module):
    """The backbone with its maps as a tuple: what ``torch.export`` (and so ONNX) expects as outputs."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.body(images))


def export(
    run_dir: str | Path,
    *,
    entry: str | None = None,
    arch: str | None = None,
    formats: Sequence[str] = FORMATS,
    what: str = "backbone",
    out: str | Path | None = None,
    image_size: int = 224,
) -> dict[str, Any]:
    """Write the retrained ``entry`` (default ``best``; or the entry whose architecture is ``arch``) of ``run_dir``
    in each of ``formats`` into ``out`` (default ``RUN_DIR/export/<entry>-<what>/``) with ``<what>.json`` beside
    them; return what the JSON holds."""
    formats = parse_formats(formats)
    if what not in WHATS:
        raise NasEngineError(f"unknown export target {what!r}; choose {' or '.join(WHATS)}")
    require(formats)
    verify_run(Path(run_dir))
    retrained = load_retrained(run_dir, entry, arch)
    if out is None:  # into the run directory: not while another process writes it
        with hold_run_lock(run_dir):
            return _export(retrained, formats, what, retrained.run.layout.export(retrained.entry, what), image_size)
    return _export(retrained, formats, what, Path(out), image_size)


def _export(retrained: Retrained, formats: Sequence[str], what: str, folder: Path, image_size: int) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    model = retrained.backbone if what == "backbone" else retrained.detector
    model.eval()
    example = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    if what == "backbone":
        example = _normalise(retrained.detector, example)
    info = {**export_description(retrained, what, example), "folder": str(folder)}
    writers: dict[str, Callable[[nn.Module, torch.Tensor, Path], dict[str, Any]]] = {
        "torchscript": _torchscript,
        "onnx": _onnx_backbone if what == "backbone" else _onnx_detector,
        "safetensors": _safetensors,
    }
    failed: dict[str, str] = {}
    for fmt in formats:
        path = folder / f"{what}{SUFFIXES[fmt]}"
        partial = folder / f".partial-{path.name}"  # written and checked here, then moved into place
        started = time.perf_counter()
        try:
            with warnings.catch_warnings(), torch.no_grad():
                # torch.jit and the TorchScript-based ONNX exporter are deprecated upstream but still work in the
                # pinned torch; the warnings would only bury the result
                warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning, UserWarning))
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                details = writers[fmt](model, example, partial)
        except NasEngineError:
            partial.unlink(missing_ok=True)
            raise
        except Exception as exc:  # a plugin's model may not be scriptable or exportable: say so, keep the others
            failed[fmt] = f"{type(exc).__name__}: {_first_line(exc)}"
            partial.unlink(missing_ok=True)
            path.unlink(missing_ok=True)  # an older export of this format would not match the JSON
            continue
        partial.chmod(0o644)  # some writers create private files; an export is meant to be shared
        partial.replace(path)
        info["files"][fmt] = {
            "file": path.name,
            "bytes": path.stat().st_size,
            "seconds": round(time.perf_counter() - started, 2),
            **details,
        }
        console.log(f"export: {fmt} written and checked ({info['files'][fmt]['seconds']:.1f} s)")
    write_json(info, folder / f"{what}.json")
    if failed:
        worked = ", ".join(info["files"]) or "none"
        fmt, reason = next(iter(failed.items()))
        raise NasEngineError(
            f"the {what} of {retrained.entry} cannot be exported as {', '.join(failed)} ({fmt}: {reason}); "
            f"formats that worked: {worked} (written to {folder}); the backbone alone exports with --what backbone"
        )
    return info


def export_description(retrained: Retrained, what: str, example: torch.Tensor) -> dict[str, Any]:
    """The JSON beside the files, before any file is written: network, cost, test metrics, inputs and outputs."""
    run, space = retrained.run, retrained.run.space
    model = retrained.backbone if what == "backbone" else retrained.detector
    info: dict[str, Any] = {
        "what": what,
        "run": str(run.dir),
        "entry": retrained.entry,
        "space": space.name,
        "space_options": space.options(),
        "task": run.config.task,
        "task_options": run.config.task_options,
        "arch": list(retrained.arch),
        "arch_text": format_arch(retrained.arch),
        "flops": retrained.result.get("flops"),
        "flops_image_size": run.config.search.flops_image_size,
        "params": retrained.result.get("params"),
        "costs": retrained.result.get("costs", {}),
        "measured": retrained.result.get("measured", {}),
        "limits": {
            name: {**bounds, "max": bounds["max"] if math.isfinite(bounds["max"]) else None}
            for name, bounds in configured_limits(run.config.search).items()
        },
        "exported_params": sum(p.numel() for p in model.parameters()),
        "test": retrained.result.get("test", {}),
        "torch": torch.__version__,
    }
    transform = getattr(retrained.detector, "transform", None)
    normalise = {"image_mean": list(transform.image_mean), "image_std": list(transform.image_std)} if transform else {}
    if what == "backbone":
        with torch.no_grad():
            maps = retrained.backbone(example)
        info["input"] = {
            "name": "images",
            "shape": ["N", 3, "H", "W"],
            "dtype": "float32",
            "meaning": "images normalised as the detector does: (pixel in [0, 1] - image_mean) / image_std",
            **normalise,
        }
        info["outputs"] = [
            {"name": name, "channels": int(m.shape[1]), "stride": example.shape[-1] // m.shape[-1]}
            for name, m in zip(map_names(len(maps)), maps)
        ]
    else:
        info["input"] = {
            "name": "images",
            "shape": [3, "H", "W"],
            "dtype": "float32",
            "meaning": "one image, pixels in [0, 1]; resized and normalised inside the detector",
            "min_size": getattr(transform, "min_size", None),
            "max_size": getattr(transform, "max_size", None),
            **normalise,
        }
        info["class_names"] = list(run.task.class_names)
    info["example_input_shape"] = list(example.shape if what == "backbone" else example.shape[1:])
    info["files"] = {}
    return info


def map_names(count: int) -> list[str]:
    """``c2``, ``c3``, ...: the names of the feature maps, C2 being the stride-4 map."""
    return [f"c{i + 2}" for i in range(count)]


def _normalise(detector: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``images`` in [0, 1] as the detector hands them to its backbone (without the resize)."""
    transform = getattr(detector, "transform", None)
    if transform is None:
        return images
    mean = torch.tensor(transform.image_mean).view(1, -1, 1, 1)
    std = torch.tensor(transform.image_std).view(1, -1, 1, 1)
    return (images - mean) / std


def _first_line(exc: Exception) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")[:200]


def _max_diff(ours: Sequence[Any], theirs: Sequence[Any]) -> float | None:
    """The largest absolute difference of two sequences of tensors/arrays, or None if their shapes differ."""
    pairs = [(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(ours, theirs)]
    if len(ours) != len(theirs) or any(a.shape != b.shape for a, b in pairs):
        return None
    return max((float((a.double() - b.double()).abs().max()) for a, b in pairs if a.numel()), default=0.0)


def _outputs(model: nn.Module, example: torch.Tensor) -> list[torch.Tensor]:
    """PyTorch's outputs on ``example`` as a flat list: the maps of a backbone, or a detector's first image's
    result values in the order of its dict."""
    if isinstance(model, FeatureMaps) or not hasattr(model, "transform"):
        return list(model(example))
    return list(model([example[0]])[0].values())


def _torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    scripted = torch.jit.script(model)
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    if hasattr(model, "transform"):
        theirs = list(loaded([example[0]])[1][0].values())
    else:
        theirs = list(loaded(example))
    info = {"method": "torch.jit.script", "max_abs_diff": _max_diff(_outputs(model, example), theirs)}
    if hasattr(model, "transform"):
        info["load"] = "import torchvision before torch.jit.load: it registers the nms and roi_align ops"
    return info


def _onnx_check(path: Path, inputs: dict[str, Any], expected: list[torch.Tensor]) -> dict[str, Any]:
    import onnx
    import onnxruntime

    imports = onnx.load(str(path), load_external_data=False).opset_import
    opset = next(o.version for o in imports if o.domain in ("", "ai.onnx"))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, inputs)
    return {"opset": int(opset), "onnxruntime": onnxruntime.__version__, "max_abs_diff": _max_diff(expected, got)}


def _onnx_backbone(model: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    wrapped = FeatureMaps(model).eval()
    names = map_names(len(_outputs(wrapped, example)))
    dynamic = {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    torch.onnx.export(
        wrapped,
        (example,),
        str(path),
        dynamo=True,
        opset_version=BACKBONE_OPSET,
        input_names=["images"],
        output_names=names,
        dynamic_shapes={"images": dynamic},
        external_data=False,
        verbose=False,
    )
    check = _onnx_check(path, {"images": example.numpy()}, _outputs(wrapped, example))
    return {
        "exporter": "torch.export (dynamo)",
        "input_names": ["images"],
        "output_names": names,
        "dynamic_axes": {"images": ["N", "H", "W"]},
        **check,
    }


def _onnx_detector(model: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    image = example[0]
    result = model([image])
    names = list(result[0]) if isinstance(result, list) and result and isinstance(result[0], dict) else None
    torch.onnx.export(
        model,
        ([image],),
        str(path),
        dynamo=False,
        opset_version=DETECTOR_OPSET,
        input_names=["images"],
        output_names=names,
        dynamic_axes={"images": {1: "H", 2: "W"}, **{name: {0: "detections"} for name in names or []}},
    )
    check = _onnx_check(path, {"images": image.numpy()}, _outputs(model, example))
    return {
        "exporter": "TorchScript-based (torch.onnx.export dynamo=False)",
        "input_names": ["images"],
        "output_names": names,
        "dynamic_axes": {"images": ["H", "W"], **{name: ["detections"] for name in names or []}},
        **check,
    }


def _safetensors(model: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    from safetensors.torch import save_file

    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})
    return {"tensors": len(state)}
