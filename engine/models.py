"""The paper's networks, sized to the dataset's input shape and class count.

- ``mlp``: hidden 500-350 with BatchNorm (the paper's MNIST MLP, 784-500-350-10); 128-64 for 8x8 digits.
- ``cnn``: a small two-conv network for quick CPU runs.
- ``vgg11``: configuration A, BatchNorm after every conv (switchable), 512-512-classes head; pooling
  stops once the feature map is 1x1, so it also runs on 8x8 digits.
- ``resnet56``: pre-activation CIFAR ResNet, 9 blocks per stage, 16/32/64 channels.
- ``wrn``: pre-activation WideResNet-d-k.
Convolutions get He-normal init (the paper's); linear layers keep PyTorch's default.
"""

from __future__ import annotations

import torch
from torch import nn


def _he_init(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def mlp(shape: tuple[int, ...], classes: int, batchnorm: bool = True) -> nn.Module:
    features = 1
    for s in shape:
        features *= s
    hidden = (128, 64) if features <= 256 else (500, 350)
    layers: list[nn.Module] = [nn.Flatten()]
    width = features
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if batchnorm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU())
        width = h
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def cnn(shape: tuple[int, ...], classes: int, batchnorm: bool = False) -> nn.Module:
    c, h, w = shape

    def block(cin: int, cout: int) -> list[nn.Module]:
        bn: list[nn.Module] = [nn.BatchNorm2d(cout)] if batchnorm else []
        return [nn.Conv2d(cin, cout, 3, padding=1), *bn, nn.ReLU(), nn.MaxPool2d(2)]

    body = nn.Sequential(*block(c, 16), *block(16, 32), nn.Flatten())
    flat = 32 * (h // 4) * (w // 4)
    return _he_init(nn.Sequential(body, nn.Linear(flat, 64), nn.ReLU(), nn.Linear(64, classes)))


_VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


def vgg11(shape: tuple[int, ...], classes: int, batchnorm: bool = True) -> nn.Module:
    c, h, _ = shape
    layers: list[nn.Module] = []
    size = h
    for v in _VGG11:
        if v == "M":
            if size > 1:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            continue
        assert isinstance(v, int)
        layers.append(nn.Conv2d(c, v, 3, padding=1))
        if batchnorm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU())
        c = v
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    head = [nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, classes)]
    return _he_init(nn.Sequential(*layers, *head))


class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = (
            nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    def __init__(self, in_ch: int, classes: int, blocks: int, widths: tuple[int, int, int]):
        super().__init__()
        self.stem = nn.Conv2d(in_ch, 16, 3, 1, 1, bias=False)
        layers: list[nn.Module] = []
        cin = 16
        for stage, width in enumerate(widths):
            for b in range(blocks):
                layers.append(PreActBlock(cin, width, 2 if stage > 0 and b == 0 else 1))
                cin = width
        self.blocks = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.stem(x))
        out = torch.relu(self.bn(out))
        return self.fc(out.mean(dim=(2, 3)))


def resnet56(shape: tuple[int, ...], classes: int) -> nn.Module:
    return _he_init(PreActResNet(shape[0], classes, 9, (16, 32, 64)))


def wrn(shape: tuple[int, ...], classes: int, depth: int = 16, width: int = 4) -> nn.Module:
    blocks = (depth - 4) // 6
    return _he_init(PreActResNet(shape[0], classes, blocks, (16 * width, 32 * width, 64 * width)))


class Decoder(nn.Module):
    """A one-block decoder-only transformer for short token sequences (``--model transformer``):
    token and position embeddings, causal multi-head self-attention and an MLP, each added to the
    residual stream, no normalisation (as in the grokking papers, whose dynamics it reproduces),
    and the class read from the last position. ``vocab`` tokens, sequences of ``length``."""

    def __init__(self, vocab: int, length: int, classes: int, width: int = 128, heads: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(length, width) / width**0.5)
        self.attention = nn.MultiheadAttention(width, heads, bias=False, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.ReLU(),
                                 nn.Linear(4 * width, width))  # fmt: skip
        self.head = nn.Linear(width, classes, bias=False)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool), 1)
        self.causal: torch.Tensor
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.position[: x.shape[1]]
        mask = self.causal[: x.shape[1], : x.shape[1]]
        h = h + self.attention(h, h, h, attn_mask=mask, need_weights=False)[0]
        h = h + self.mlp(h)
        return self.head(h[:, -1])


def transformer(shape: tuple[int, ...], classes: int) -> nn.Module:
    """The decoder for sequences of ``shape[0]`` token ids below ``classes + 1`` (the classes and
    one separator, as in modular addition's [a, b, =])."""
    return Decoder(classes + 1, shape[0], classes)


def build_model(
    name: str,
    shape: tuple[int, ...],
    classes: int,
    batchnorm: bool | None = None,
    wrn_depth: int = 16,
    wrn_width: int = 4,
) -> nn.Module:
    if name == "mlp":
        return mlp(shape, classes, True if batchnorm is None else batchnorm)
    if name == "cnn":
        return cnn(shape, classes, False if batchnorm is None else batchnorm)
    if name == "vgg11":
        return vgg11(shape, classes, True if batchnorm is None else batchnorm)
    if name == "resnet56":
        return resnet56(shape, classes)
    if name == "wrn":
        return wrn(shape, classes, wrn_depth, wrn_width)
    if name == "transformer":
        return transformer(shape, classes)
    raise ValueError(f"unknown model {name!r}")


def fit_notes(name: str, shape: tuple[int, ...]) -> list[str]:
    """What a user should know when a model meets inputs smaller than it was designed for."""
    if name == "vgg11" and len(shape) == 3 and shape[1] < 32:
        pools = sum(1 for v in _VGG11 if v == "M")
        kept = max(0, (shape[1] - 1).bit_length())  # halvings until the map is 1x1
        return [f"vgg11 is built for 32x32 inputs or larger; on {shape[1]}x{shape[2]} it keeps "
                f"{min(kept, pools)} of its {pools} poolings (the last feature maps are 1x1), "
                "so it measures a smaller network than the paper's"]  # fmt: skip
    return []


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
