"""Data sets: the embedded Fashion-MNIST sample, the full Fashion-MNIST, ImageFolder.

The embedded sample (`assets/fmnist-data.npz`) holds a calibration sample from
the training split and the full 10k test split, so the default needs no network.
The full data set comes from Debian's `dataset-fashion-mnist` package when it is
installed, else from torchvision's downloader.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from .errors import DataError

__all__ = [
    "FMNIST_MEAN",
    "FMNIST_STD",
    "FMNIST_CLASSES",
    "calibration_labels",
    "ASSETS_DIR",
    "DataBundle",
    "Resize",
    "read_idx",
    "normalize",
    "load_embedded",
    "load_fashion_mnist",
    "fashion_mnist_arrays",
    "load_imagefolder",
    "load_data",
    "calibration_tensor",
    "make_loader",
]

FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
FMNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
EMBEDDED_FILE = ASSETS_DIR / "fmnist-data.npz"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class DataBundle:
    """A calibration set (from training data) and an evaluation set, with provenance."""

    name: str
    calib: Dataset
    test: Dataset
    classes: tuple[str, ...]
    source: str

    def describe(self) -> dict[str, object]:
        """Sizes and source, for run records and the UI."""
        return {"name": self.name, "calib": len(self.calib), "test": len(self.test), "source": self.source}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped), the format of (Fashion-)MNIST."""
    opener: Callable = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def normalize(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> normalised float (N, 1, 28, 28)."""
    x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0)  # copy: inputs may be read-only
    return x.sub_(FMNIST_MEAN).div_(FMNIST_STD).unsqueeze(1)


@dataclass(frozen=True)
class Resize:
    """Fashion-MNIST tensors for a model with a larger input: bilinear resize, gray channel repeated.

    Works on one image (C, H, W) or a batch (N, C, H, W) of normalised images. The
    repeated channels are a view (`expand`), so a resized data set holds one channel.

    >>> Resize(64, 3)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 3, 64, 64])
    """

    size: int
    channels: int = 1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch = x if x.ndim == 4 else x.unsqueeze(0)
        out = torch.nn.functional.interpolate(batch, size=(self.size, self.size), mode="bilinear", align_corners=False)
        out = out.expand(-1, self.channels, -1, -1)
        return out if x.ndim == 4 else out[0]


def _tensor_dataset(images: np.ndarray, labels: np.ndarray, resize: Resize | None = None) -> TensorDataset:
    x = normalize(images)
    return TensorDataset(resize(x) if resize else x, torch.from_numpy(labels.astype(np.int64)))


def load_embedded(path: str | Path = EMBEDDED_FILE, resize: Resize | None = None) -> DataBundle:
    """The calibration sample and the 10k test split shipped in `assets/` (resized for the model if asked)."""
    if not Path(path).is_file():
        raise DataError(f"embedded data {path} is missing; rebuild it with `python tools/make_data.py`")
    with np.load(path) as z:
        calib = _tensor_dataset(z["calib_x"], z["calib_y"], resize)
        test = _tensor_dataset(z["test_x"], z["test_y"], resize)
    return DataBundle("fmnist-sample", calib, test, FMNIST_CLASSES, f"embedded ({Path(path).name})")


def fashion_mnist_arrays(root: str | Path | None, download: bool) -> tuple[dict[str, np.ndarray], str]:
    """The raw Fashion-MNIST splits as uint8 arrays, and where they came from.

    Read from Debian's ``dataset-fashion-mnist`` when it is installed, else through
    torchvision under `root` (default ``$PTQ_DATA_DIR`` or ``~/.cache/ptq-explorer/data``),
    downloaded there if `download`.

    Returns:
        ``({"train_x": [60000, 28, 28], "train_y": [60000], "test_x": [10000, 28, 28],
        "test_y": [10000]}, source description)``.

    Raises:
        DataError: If neither source has the files.
    """
    if DEBIAN_DIR.is_dir() and (DEBIAN_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        files = {
            "train_x": "train-images-idx3-ubyte.gz",
            "train_y": "train-labels-idx1-ubyte.gz",
            "test_x": "t10k-images-idx3-ubyte.gz",
            "test_y": "t10k-labels-idx1-ubyte.gz",
        }
        return {k: read_idx(DEBIAN_DIR / f) for k, f in files.items()}, f"Debian package ({DEBIAN_DIR})"
    root = Path(root or os.environ.get("PTQ_DATA_DIR", Path.home() / ".cache" / "ptq-explorer" / "data"))
    try:
        from torchvision.datasets import FashionMNIST

        train = FashionMNIST(str(root), train=True, download=download)
        test = FashionMNIST(str(root), train=False, download=download)
    except Exception as exc:  # offline, or files absent without download
        raise DataError(
            f"full Fashion-MNIST is not available ({type(exc).__name__}: {exc}); install Debian's "
            f"`dataset-fashion-mnist`, or put the four idx files under {root}/FashionMNIST/raw, "
            "or use the embedded sample"
        ) from None
    arrays = {
        "train_x": train.data.numpy(),
        "train_y": train.targets.numpy(),
        "test_x": test.data.numpy(),
        "test_y": test.targets.numpy(),
    }
    return arrays, f"torchvision ({root})"


def load_fashion_mnist(
    root: str | Path | None = None,
    calib_size: int = 4096,
    seed: int = 0,
    download: bool = True,
    resize: Resize | None = None,
) -> DataBundle:
    """The full 70k Fashion-MNIST: a seeded calibration draw from train, the 10k test split."""
    arrays, source = fashion_mnist_arrays(root, download)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(arrays["train_y"]), size=min(calib_size, len(arrays["train_y"])), replace=False)
    calib = _tensor_dataset(arrays["train_x"][idx], arrays["train_y"][idx], resize)
    test = _tensor_dataset(arrays["test_x"], arrays["test_y"], resize)
    return DataBundle("fmnist-full", calib, test, FMNIST_CLASSES, source)


def load_imagefolder(
    path: str | Path, transform: Callable | None = None, calib_size: int = 1024, seed: int = 0
) -> DataBundle:
    """An ImageNet-style folder (one sub-folder per class); calib and test drawn disjointly."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    from torchvision.datasets import ImageFolder

    try:
        ds = ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"image folder {root} holds no images: {exc}") from None
    if len(ds) < 2:
        raise DataError(f"image folder {root} holds {len(ds)} image(s); need at least 2")
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed)).tolist()
    n_cal = min(calib_size, len(ds) // 2)
    return DataBundle(
        f"imagefolder:{root}",
        Subset(ds, perm[:n_cal]),
        Subset(ds, perm[n_cal:]),
        tuple(ds.classes),
        f"ImageFolder ({root})",
    )


def load_data(spec: str = "fmnist-sample", transform: Callable | None = None) -> DataBundle:
    """Load by name: `fmnist-sample`, `fmnist-full`, or `imagefolder:<path>` / a folder path.

    `transform` is the model's: a `Resize` applies to the Fashion-MNIST tensors, any
    other callable to the images of an ImageFolder.
    """
    resize = transform if isinstance(transform, Resize) else None
    if spec == "fmnist-sample":
        return load_embedded(resize=resize)
    if spec == "fmnist-full":
        return load_fashion_mnist(resize=resize)
    folder = spec.removeprefix("imagefolder:")
    if spec.startswith("imagefolder:") or Path(folder).is_dir():
        return load_imagefolder(folder, None if resize else transform)
    raise DataError(f"unknown data set {spec!r}: use fmnist-sample, fmnist-full or imagefolder:<path>")


def calibration_tensor(bundle: DataBundle, n: int, seed: int = 0) -> torch.Tensor:
    """The first `n` calibration images of a seeded permutation, stacked as one tensor."""
    if n < 1:
        raise DataError("calibration size must be at least 1")
    ds = bundle.calib
    n = min(n, len(ds))
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
    if isinstance(ds, TensorDataset):
        return ds.tensors[0][perm]
    return torch.stack([ds[int(i)][0] for i in perm])


def calibration_labels(bundle: DataBundle, n: int, seed: int = 0) -> torch.Tensor:
    """The labels of `calibration_tensor(bundle, n, seed)`'s images, in the same order."""
    ds = bundle.calib
    n = min(max(n, 1), len(ds))
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
    if isinstance(ds, TensorDataset):
        return ds.tensors[1][perm]
    return torch.tensor([int(ds[int(i)][1]) for i in perm])


def make_loader(ds: Dataset, batch_size: int = 256, limit: int | None = None) -> DataLoader:
    """A deterministic evaluation loader, optionally over the first `limit` samples."""
    if limit is not None and limit < len(ds):
        ds = Subset(ds, range(limit))
    return DataLoader(ds, batch_size=batch_size, shuffle=False)
