"""Datasets held whole on the training device, as tensors.

Why tensors and not DataLoaders: the landscape measurements evaluate the same fixed probe set many
times per step, and the paper's datasets (digits, MNIST, CIFAR, 64x64 Tiny-ImageNet) fit in device
memory as uint8. Batches are index slices; CIFAR's crop+flip augmentation runs batched on the device.
Splits follow the paper: the last 5,000 training examples are the validation set (MNIST, CIFAR);
digits uses a fixed shuffled 1,500/297 split; Tiny-ImageNet uses its own ``val`` folder.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from sgdwalk.errors import DataError

VAL_SIZE = 5000
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


@dataclass
class Data:
    """A training and validation split on one device. Images are kept raw (uint8 or float)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    mean: torch.Tensor  # per channel, shape (C, 1, 1), in raw units
    std: torch.Tensor
    augment: bool = False
    available: int = 0  # training examples in the dataset, before --train-size

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    @property
    def tokens(self) -> bool:
        """Whether the inputs are token ids (an embedding's input: never normalised)."""
        return not self.x_train.is_floating_point() and self.x_train.dtype != torch.uint8

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens:
            return x
        return (x.to(self.mean.dtype) - self.mean) / self.std

    def inputs(self, idx: torch.Tensor | slice, split: str = "train") -> torch.Tensor:
        """Normalised, un-augmented inputs (what the probe and validation see)."""
        x = self.x_train if split == "train" else self.x_val
        return self.normalise(x[idx])

    def train_batch(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Normalised training inputs, with crop+flip when the dataset augments."""
        x = self.x_train[idx]
        if self.augment:
            x = crop_flip(x, gen)
        return self.normalise(x)


def crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip of a batch (B, C, H, W)."""
    b, _, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=gen).to(x.device)
    flips = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------- loaders


def load_data(
    name: str,
    data_dir: str | os.PathLike[str],
    device: torch.device,
    download: bool = False,
    augment: bool | None = None,
    train_size: int | None = None,
) -> Data:
    loader = _LOADERS[name]
    x_tr, y_tr, x_va, y_va, classes, default_augment = loader(Path(data_dir), download)
    available = len(y_tr)
    if train_size is not None:
        x_tr, y_tr = x_tr[:train_size], y_tr[:train_size]
    x_tr_t = torch.as_tensor(x_tr)
    mean, std = _channel_stats(x_tr_t) if x_tr_t.dim() > 2 else _flat_stats(x_tr_t)
    return Data(
        name=name,
        x_train=x_tr_t.to(device),
        y_train=torch.as_tensor(y_tr, dtype=torch.long).to(device),
        x_val=torch.as_tensor(x_va).to(device),
        y_val=torch.as_tensor(y_va, dtype=torch.long).to(device),
        num_classes=classes,
        mean=mean.to(device, torch.get_default_dtype()),
        std=std.to(device, torch.get_default_dtype()),
        augment=default_augment if augment is None else augment,
        available=available,
    )


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the training inputs (chunked: CIFAR as float is 550 MB)."""
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    sq = torch.zeros(c, dtype=torch.float64)
    n = 0
    for chunk in torch.split(x, 4096):
        f = chunk.double().transpose(0, 1).reshape(c, -1)
        total += f.sum(1)
        sq += (f * f).sum(1)
        n += f.shape[1]
    mean = total / n
    std = (sq / n - mean * mean).clamp_min(1e-12).sqrt()
    return mean.float().view(c, 1, 1), std.float().view(c, 1, 1)


def _flat_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs that are not images (token ids): nothing to normalise by."""
    return torch.zeros(1), torch.ones(1)


def _modular(p: int = 59, train_fraction: float = 0.5):
    """a + b mod p, every pair once (Power et al. 2022, "Grokking"): the sequence [a, b, =] of
    token ids (= is token p) and the label (a + b) mod p; a fixed random ``train_fraction`` of
    the p² pairs trains, the rest validates. Generated: nothing to download."""

    def load(_root: Path, _download: bool):
        a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
        x = np.stack([a.ravel(), b.ravel(), np.full(p * p, p)], 1).astype(np.int64)
        y = (a.ravel() + b.ravel()) % p
        order = np.random.default_rng(59).permutation(p * p)
        n = int(train_fraction * p * p)
        tr, va = order[:n], order[n:]
        return x[tr], y[tr], x[va], y[va], p, False

    return load


def _digits(_root: Path, _download: bool):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.data.astype(np.float32).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))  # fixed split, independent of --seed
    train, val = order[:1500], order[1500:]
    return x[train], y[train], x[val], y[val], 10, False


def _missing(name: str, path: Path) -> DataError:
    return DataError(
        f"{name} not found at {path}; put it there (--data-dir) or pass --download on a machine "
        "that is online"
    )


@contextlib.contextmanager
def _downloading(name: str, url: str, folder: Path) -> Iterator[None]:
    """A download as one ``DataError`` line when it fails (no network, a proxy, a dead mirror),
    naming the host it tried and the folder to fill by hand; torchvision's own chatter is muted."""
    host = urlparse(url).netloc or url
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    except (OSError, RuntimeError, ValueError) as e:  # urllib's URLError is an OSError
        lines = [ln.strip() for ln in str(getattr(e, "reason", None) or e).splitlines()]
        reason = ([ln for ln in lines if ln] or [type(e).__name__])[-1]
        reason = reason.removeprefix("<urlopen error ").rstrip(">")
        raise DataError(
            f"cannot download {name} from {host} ({reason}); put its files in "
            f"{folder} by hand (see README 'Data')"
        ) from None


def _mnist(root: Path, download: bool):
    from torchvision.datasets import MNIST

    raw = root / "MNIST" / "raw"
    if download:
        with _downloading("MNIST", MNIST.mirrors[0], raw):
            MNIST(str(root), train=True, download=True)
    try:
        ds = MNIST(str(root), train=True, download=False)
    except RuntimeError:
        raise _missing("MNIST", root / "MNIST" / "raw") from None
    x = ds.data.numpy().reshape(-1, 1, 28, 28)
    y = ds.targets.numpy()
    return _last_val(x, y) + (10, False)


def _last_val(x: np.ndarray, y: np.ndarray) -> tuple:
    """The paper's split: the last 5,000 training examples validate (fewer on tiny files)."""
    v = min(VAL_SIZE, len(y) // 10) if len(y) < 2 * VAL_SIZE else VAL_SIZE
    return x[:-v], y[:-v], x[-v:], y[-v:]


def _cifar(classes: int):
    def load(root: Path, download: bool):
        from torchvision.datasets import CIFAR10, CIFAR100

        base = CIFAR10 if classes == 10 else CIFAR100

        class _Cifar(base):  # type: ignore[valid-type,misc]
            # torchvision checks an md5 of every file on each load; existence is enough here and
            # keeps loading the real pickle format testable on small files.
            def _check_integrity(self) -> bool:
                folder = Path(self.root) / self.base_folder
                return all((folder / f).is_file() for f, _ in self.train_list)

            def _load_meta(self) -> None:  # class names are not needed; skip its md5 check too
                self.classes: list[str] = []
                self.class_to_idx: dict[str, int] = {}

        if download:
            with _downloading(f"CIFAR-{classes}", base.url, root / base.base_folder):
                _Cifar(str(root), train=True, download=True)
        try:
            ds = _Cifar(str(root), train=True, download=False)
        except RuntimeError:
            raise _missing(f"CIFAR-{classes}", root / base.base_folder) from None
        x = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))
        y = np.asarray(ds.targets, dtype=np.int64)
        return _last_val(x, y) + (classes, True)

    return load


def _tiny_imagenet(root: Path, download: bool):
    folder = root / "tiny-imagenet-200"
    if download and not folder.is_dir():
        from torchvision.datasets.utils import download_and_extract_archive

        with _downloading("Tiny-ImageNet", TINY_URL, folder):
            download_and_extract_archive(TINY_URL, str(root))
    if not (folder / "wnids.txt").is_file():
        raise _missing("Tiny-ImageNet", folder)
    cache = folder / "sgdwalk-cache.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return z["xt"], z["yt"], z["xv"], z["yv"], 200, True
    wnids = (folder / "wnids.txt").read_text().split()
    index = {w: i for i, w in enumerate(wnids)}
    train = [
        (p, index[w]) for w in wnids for p in sorted((folder / "train" / w / "images").glob("*"))
    ]
    val = []
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1] in index:
            val.append((folder / "val" / "images" / parts[0], index[parts[1]]))
    xt, yt = _read_images(train)
    xv, yv = _read_images(val)
    with contextlib.suppress(OSError):  # a read-only data folder only costs the decode next time
        np.savez(cache, xt=xt, yt=yt, xv=xv, yv=yv)
    return xt, yt, xv, yv, len(wnids), True


def _read_images(items: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    if not items:
        raise DataError("Tiny-ImageNet folder holds no images")
    xs = np.empty((len(items), 3, 64, 64), dtype=np.uint8)
    for i, (path, _) in enumerate(items):
        with Image.open(path) as im:
            xs[i] = np.asarray(im.convert("RGB").resize((64, 64))).transpose(2, 0, 1)
    return xs, np.array([c for _, c in items], dtype=np.int64)


def _synthetic(shape: tuple[int, ...], mean: tuple[int, ...], noise: float, what: str):
    """Generated data of a real dataset's ``shape``, 10 classes, each a random mean of shape
    ``mean`` (broadcast) plus noise, for benchmarks: nothing to download."""

    def load(_root: Path, _download: bool):
        rng = np.random.default_rng(1234)
        n = 6000
        y = rng.integers(0, 10, n)
        base = rng.integers(40, 216, (10, *mean))
        x = np.clip(base[y] + rng.normal(0, noise, (n, *shape)), 0, 255).astype(np.uint8)
        return x[:5000], y[:5000], x[5000:], y[5000:], 10, True

    load.__doc__ = f"{what}-shaped generated data (sgdwalk.data._synthetic)"
    return load


_LOADERS = {
    "digits": _digits,
    "mnist": _mnist,
    "cifar10": _cifar(10),
    "cifar100": _cifar(100),
    "tiny-imagenet": _tiny_imagenet,
    # a colour per class (the small CNN's benchmark case)
    "synthetic-cifar10": _synthetic((3, 32, 32), (3, 1, 1), 40, "CIFAR"),
    # an image per class: the paper's 784-500-350-10 MLP
    "synthetic-mnist": _synthetic((1, 28, 28), (1, 28, 28), 60, "MNIST"),
    # token ids [a, b, =] and (a + b) mod 59: a transformer's grokking task
    "modular-addition": _modular(),
}
