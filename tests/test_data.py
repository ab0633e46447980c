"""Dataset loading through the real code, on tiny files written in the real on-disk formats."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sgdwalk.data import DataError, crop_flip, load_data

CPU = torch.device("cpu")


def write_mnist(root: Path, n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    for prefix in ("train", "t10k"):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())  # fmt: skip
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, n) + labels.tobytes()
        )
    return images, labels


def write_cifar(root: Path, classes: int, n_per_file: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    if classes == 10:
        folder, files, key = (
            root / "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            "labels",
        )
    else:
        folder, files, key = root / "cifar-100-python", ["train"], "fine_labels"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for name in files:
        data = rng.integers(0, 256, (n_per_file, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, n_per_file).tolist()
        with open(folder / name, "wb") as fh:  # the real files are latin1 python pickles
            pickle.dump({"data": data, key: labels, "batch_label": name}, fh, protocol=2)
        xs.append(data)
        ys += labels
    return np.concatenate(xs).reshape(-1, 3, 32, 32), np.array(ys)


def write_tiny_imagenet(root: Path, wnids=("n01", "n02", "n03"), per_class: int = 4) -> None:
    from PIL import Image

    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rng = np.random.default_rng(2)
    for w in wnids:
        d = base / "train" / w / "images"
        d.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                d / f"{w}_{i}.JPEG"
            )
    lines = []
    for i, w in enumerate(wnids):
        name = f"val_{i}.JPEG"
        Image.fromarray(np.full((64, 64, 3), 10 * i, dtype=np.uint8)).save(
            base / "val" / "images" / name
        )
        lines.append(f"{name}\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_digits_is_embedded_with_a_fixed_split():
    a = load_data("digits", "nowhere", CPU)
    b = load_data("digits", "nowhere", CPU)
    assert a.n_train == 1500 and a.y_val.shape[0] == 297 and a.input_shape == (1, 8, 8)
    assert torch.equal(a.x_train, b.x_train)
    assert a.inputs(slice(None)).mean().abs() < 1e-4


def test_mnist_idx_files_with_the_paper_split(tmp_path: Path):
    images, labels = write_mnist(tmp_path)
    d = load_data("mnist", tmp_path, CPU)
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert d.n_train + d.y_val.shape[0] == 60
    assert torch.equal(d.x_train[0, 0], torch.as_tensor(images[0]))
    assert torch.equal(d.y_val, torch.as_tensor(labels[-6:], dtype=torch.long))  # the last ones


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_python_pickles(tmp_path: Path, classes: int):
    x, y = write_cifar(tmp_path, classes)
    d = load_data(f"cifar{classes}", tmp_path, CPU)
    assert d.input_shape == (3, 32, 32) and d.num_classes == classes and d.augment
    n = len(y)
    assert d.n_train == n - d.y_val.shape[0]
    assert torch.equal(d.x_train[3], torch.as_tensor(x[3]))
    assert torch.equal(d.y_val, torch.as_tensor(y[d.n_train :], dtype=torch.long))


def test_tiny_imagenet_tree_with_val_annotations(tmp_path: Path):
    write_tiny_imagenet(tmp_path)
    d = load_data("tiny-imagenet", tmp_path, CPU)
    assert d.input_shape == (3, 64, 64) and d.num_classes == 3
    assert d.n_train == 12 and d.y_val.tolist() == [0, 1, 2]
    assert d.x_val[2].float().mean().item() == pytest.approx(20, abs=1)
    again = load_data("tiny-imagenet", tmp_path, CPU)  # second load comes from the npz cache
    assert torch.equal(again.x_train, d.x_train)


@pytest.mark.parametrize("name, where", [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py"),
                                         ("cifar100", "cifar-100-python"),
                                         ("tiny-imagenet", "tiny-imagenet-200")])  # fmt: skip
def test_a_missing_dataset_names_the_path_and_download(tmp_path: Path, name: str, where: str):
    with pytest.raises(DataError) as e:
        load_data(name, tmp_path, CPU)
    assert str(tmp_path / where) in str(e.value) and "--download" in str(e.value)


def test_crop_flip_keeps_shape_and_content():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    out = crop_flip(x, g)
    assert out.shape == x.shape
    for img, src in zip(out, x, strict=True):  # every output pixel is a source pixel or padding
        vals = set(img.flatten().tolist()) - {0.0}
        assert vals <= set(src.flatten().tolist())
