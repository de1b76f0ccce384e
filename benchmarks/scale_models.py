"""The models of the scale benchmarks: realistic sizes, random weights, seeded eval data.

- ``resnet-18`` / ``resnet-50``: torchvision's ``ResNet`` (BasicBlock / Bottleneck, v1.5:
  stride on the 3x3 convolution; in-place ReLU modules; the same module names,
  ``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``, ..., ``fc``), written out
  here because torchvision is not a dependency. Random weights with torchvision's
  initialisation; BatchNorm statistics are set from a few random images so activations stay
  normalised. Eval data: random 224x224 images.
- ``bert-base``: ``transformers.BertForSequenceClassification(BertConfig())``, random
  weights; eval data: random token ids, dict inputs ``{input_ids, attention_mask}``.
- ``mlp-128``: 128 ``Linear`` layers (1024 wide, ReLU between; about 134M weights), He init.

There are no labels: every model's eval targets are ``None``, so the metric is top-1
agreement with the float model. ``quick=True`` gives tiny versions of the same
architectures (for the CI smoke test).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class ScaleModel:
    """A benchmark model and its eval data (``(inputs, None)``) with the batch size to use."""

    name: str
    model: nn.Module
    eval_data: tuple[Any, None]
    batch_size: int
    description: str


# -- torchvision's ResNet ------------------------------------------------------------------------
def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision.models.ResNet; ``width`` (64 in torchvision) shrinks it for quick runs."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, int, int, int], num_classes: int = 1000, width: int = 64) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion))
        layers: list[nn.Module] = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _set_bn_statistics(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """BatchNorm running statistics from ``images`` (a cumulative average), then eval mode."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model(images)
    return model.eval()


def _resnet(name: str, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, int, int, int], quick: bool) -> ScaleModel:
    torch.manual_seed(0)
    width, size, images, classes = (8, 32, 8, 10) if quick else (64, 224, 64, 1000)
    model = _set_bn_statistics(ResNet(block, layers, classes, width), torch.randn(4 if quick else 8, 3, size, size))
    data = torch.randn(images, 3, size, size)
    return ScaleModel(name, model, (data, None), 32, f"{images} random {size}x{size} images, batches of 32")


def resnet18(quick: bool = False) -> ScaleModel:
    return _resnet("resnet-18", BasicBlock, (2, 2, 2, 2), quick)


def resnet50(quick: bool = False) -> ScaleModel:
    return _resnet("resnet-50", Bottleneck, (3, 4, 6, 3), quick)


# -- BERT-base -------------------------------------------------------------------------------------
def bert_base(quick: bool = False) -> ScaleModel:
    import transformers

    torch.manual_seed(0)
    if quick:
        config = transformers.BertConfig(
            vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_position_embeddings=64,
        )
    else:
        config = transformers.BertConfig()
    model = transformers.BertForSequenceClassification(config).eval()
    sequences, tokens = (8, 16) if quick else (32, 64)
    ids = torch.randint(0, config.vocab_size, (sequences, tokens))
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return ScaleModel("bert-base", model, (data, None), 32, f"{sequences} random sequences x {tokens} tokens, one batch")


# -- a deep MLP ------------------------------------------------------------------------------------
def mlp128(quick: bool = False) -> ScaleModel:
    torch.manual_seed(0)
    width, samples = (32, 64) if quick else (1024, 256)
    layers: list[nn.Module] = []
    for i in range(128):
        linear = nn.Linear(width, 10 if i == 127 else width)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")  # keeps activations O(1) through 128 layers
        nn.init.zeros_(linear.bias)
        layers += [linear] if i == 127 else [linear, nn.ReLU()]
    model = nn.Sequential(*layers).eval()
    data = torch.randn(samples, width)
    return ScaleModel("mlp-128", model, (data, None), 256, f"{samples} random vectors of {width}, one batch")


BUILDERS: dict[str, Callable[[bool], ScaleModel]] = {
    "resnet-18": resnet18,
    "resnet-50": resnet50,
    "bert-base": bert_base,
    "mlp-128": mlp128,
}


def build(name: str, quick: bool = False) -> ScaleModel:
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {sorted(BUILDERS)}")
    return BUILDERS[name](quick)
