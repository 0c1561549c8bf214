"""Fashion-MNIST from its IDX files: finding them, parsing them, and a fast in-memory dataset.

The four ``*-ubyte.gz`` files are looked up in ``data_root`` when one is given, else in the Debian
package's folder, else downloaded by torchvision into the nasengine cache. Parsed arrays are cached per
process, and resizing is done once for the whole array, so a sample is an index into a ``uint8`` tensor
plus a few cheap tensor operations.
"""

from __future__ import annotations

import gzip
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from nasengine.cache import cache_dir
from nasengine.errors import NasEngineError

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = (
    "install it with 'apt-get install dataset-fashion-mnist' or pass --data-root a folder holding the IDX files"
)
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SOURCE_SIZE = 28


def _find_in(folder: Path) -> Path | None:
    """``folder`` (or torchvision's ``FashionMNIST/raw`` below it) if it holds all four files."""
    for candidate in (folder, folder / "FashionMNIST" / "raw"):
        names = [name for pair in FILES.values() for name in pair]
        if all((candidate / f"{name}.gz").is_file() or (candidate / name).is_file() for name in names):
            return candidate
    return None


def _download(folder: Path) -> None:
    """Fetch the files with torchvision (needs network access)."""
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(folder), train=True, download=True)
    FashionMNIST(str(folder), train=False, download=True)


def find_fashion_mnist(data_root: str | Path | None = None) -> Path:
    """The folder holding the Fashion-MNIST IDX files; a one-line NasEngineError saying how to get them."""
    if data_root is not None:
        found = _find_in(Path(data_root))
        if found is None:
            raise NasEngineError(
                f"no Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...) in {data_root}; pass --data-root a "
                f"folder holding them, or omit it to use {SYSTEM_DIR} ('apt-get install dataset-fashion-mnist')"
            )
        return found
    found = _find_in(SYSTEM_DIR)
    if found is not None:
        return found
    cache = cache_dir("fashion-mnist")
    found = _find_in(cache)
    if found is not None:
        return found
    try:
        _download(cache)
    except Exception as exc:  # no network, a proxy, a broken mirror: all end in the same advice
        raise NasEngineError(
            f"Fashion-MNIST is not in {SYSTEM_DIR} and downloading it failed ({type(exc).__name__}); {INSTALL_HINT}"
        ) from None
    found = _find_in(cache)
    if found is None:
        raise NasEngineError(f"Fashion-MNIST download into {cache} left no IDX files; {INSTALL_HINT}")
    return found


@lru_cache(maxsize=8)
def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The ``uint8`` array of an IDX file (gzipped or not) with ``ndim`` dimensions, read-only."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise NasEngineError(
            f"{path} is not a readable gzip file ({exc}); delete it and reinstall Fashion-MNIST"
        ) from None
    header = 4 + 4 * ndim
    expected = 0x0800 + ndim  # two zero bytes, type 0x08 (unsigned byte), number of dimensions
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic != expected or len(raw) < header:
        found = "a file too short for an IDX header" if magic is None else f"magic number 0x{magic:08x}"
        raise NasEngineError(
            f"{path} is not an IDX file of {ndim}-d unsigned bytes ({found}, expected 0x{expected:08x}); "
            "delete it and reinstall Fashion-MNIST"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise NasEngineError(
            f"{path} holds {len(raw) - header} bytes of data but its header says {shape}; the file is truncated or "
            "corrupt: delete it and reinstall Fashion-MNIST"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _idx_path(folder: Path, name: str) -> Path:
    gz = folder / f"{name}.gz"
    return gz if gz.is_file() else folder / name


def read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw ``(images N×28×28, labels N)`` of ``split`` ("train" or "t10k") as ``uint8`` arrays."""
    image_name, label_name = FILES[split]
    images = read_idx(_idx_path(folder, image_name), 3)
    labels = read_idx(_idx_path(folder, label_name), 1)
    if len(images) != len(labels) or images.shape[1:] != (SOURCE_SIZE, SOURCE_SIZE) or labels.max(initial=0) >= 10:
        raise NasEngineError(
            f"the Fashion-MNIST {split} files in {folder} do not match ({images.shape} images, {labels.shape} labels "
            "with values up to 9 expected); reinstall Fashion-MNIST"
        )
    return images, labels


def fit_to_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """28×28 ``uint8`` images framed in ``size``×``size``: the item scaled to 7/8 of the frame, zero border.

    At the default 32 px this is a plain 2-pixel zero padding; other sizes keep the same framing.
    """
    inner = max(1, round(size * SOURCE_SIZE / 32))
    before = (size - inner) // 2
    padding = (before, size - inner - before, before, size - inner - before)
    if inner != SOURCE_SIZE:  # uint8 bilinear is several times faster than going through float
        images = F.interpolate(images[:, None], size=(inner, inner), mode="bilinear", antialias=inner < SOURCE_SIZE)[
            :, 0
        ]
    return F.pad(images, padding)


@lru_cache(maxsize=4)
def load_split(folder: Path, split: str, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images N×S×S uint8, labels N int64)`` of ``split`` at ``image_size``, cached per process."""
    images, labels = read_split(folder, split)
    return fit_to_size(torch.from_numpy(images.copy()), image_size), torch.from_numpy(labels.astype(np.int64))


class FashionMnistDataset(Dataset):
    """Samples ``(3×S×S float image in [0, 1], label)`` at ``indices`` of a preprocessed ``uint8`` array.

    With ``train`` each sample gets a random crop with zero padding (``S // 8`` pixels) and a random
    horizontal flip, drawn from torch's global generator so seeded training is reproducible. A
    DataLoader fetches whole batches through ``__getitems__``: one indexing operation crops and flips
    every image of the batch.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, *, train: bool):
        self.images, self.labels, self.indices, self.train = images, labels, indices, train
        self.pad = images.shape[-1] // 8

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        sources = self.indices[torch.as_tensor(indices, dtype=torch.long)]
        images = self.images[sources]
        if self.train:
            images = self._augment(images)
        images = images.to(torch.float32).div_(255.0)[:, None].expand(-1, 3, -1, -1)
        return list(zip(images.unbind(0), self.labels[sources].tolist()))

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        count, size = len(images), images.shape[-1]
        offsets = torch.randint(0, 2 * self.pad + 1, (count, 2))
        flips = torch.randint(0, 2, (count,)).bool()
        steps = torch.arange(size)
        rows = offsets[:, :1] + steps  # crop window of the zero-padded image
        columns = offsets[:, 1:] + torch.where(flips[:, None], steps.flip(0), steps)
        padded = F.pad(images, (self.pad,) * 4)
        return padded[torch.arange(count)[:, None, None], rows[:, :, None], columns[:, None, :]]
